//! Rule groups as the collector's `/api/v1/rules` reports them.

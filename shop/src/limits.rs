//! How much one order may take. Without a cap one shopper could reserve the whole stock
//! in one order (50 items of 1,000 units was accepted), locking everyone else out of it.
//!
//! [`OrderLimits`]: by default 100 units of a product (summed over every line naming it)
//! and 500 in all. `HALE_SHOP_MAX_UNITS_PER_ITEM` and `HALE_SHOP_MAX_UNITS_PER_ORDER`
//! override them until cluster.toml has a place for them. Both the orders service (before
//! it reserves) and the catalog's reservation endpoint check them, and answer 400 naming
//! the cap. The check takes plain `(product, quantity)` lines, so catalog and orders
//! depend on this module and not the other way round.

use crate::http::AppError;

/// Caps on the units of one order, enforced by the orders service (for shoppers) and by
/// the catalog's reservation endpoint (for anyone holding `catalog:reserve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderLimits {
    /// Units of one product in one order.
    pub max_units_per_item: u32,
    /// Units of all products in one order.
    pub max_units_per_order: u32,
}

/// Environment variables that override the defaults (until `cluster.toml` has a place
/// for them).
pub const MAX_UNITS_PER_ITEM_ENV: &str = "HALE_SHOP_MAX_UNITS_PER_ITEM";
pub const MAX_UNITS_PER_ORDER_ENV: &str = "HALE_SHOP_MAX_UNITS_PER_ORDER";

impl Default for OrderLimits {
    /// Generous for a household, far from a warehouse.
    fn default() -> Self {
        OrderLimits { max_units_per_item: 100, max_units_per_order: 500 }
    }
}

impl OrderLimits {
    /// The defaults, overridden by [`MAX_UNITS_PER_ITEM_ENV`] and [`MAX_UNITS_PER_ORDER_ENV`].
    pub fn from_env() -> Result<Self, String> {
        let mut limits = OrderLimits::default();
        for (name, field) in [
            (MAX_UNITS_PER_ITEM_ENV, &mut limits.max_units_per_item),
            (MAX_UNITS_PER_ORDER_ENV, &mut limits.max_units_per_order),
        ] {
            if let Ok(value) = std::env::var(name) {
                *field = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| format!("{name} must be a whole number from 1 to 1000000, not {value:?}"))?;
            }
        }
        if limits.max_units_per_item > limits.max_units_per_order {
            return Err(format!("{MAX_UNITS_PER_ITEM_ENV} must not be more than {MAX_UNITS_PER_ORDER_ENV}"));
        }
        Ok(limits)
    }

    /// 400 naming the cap when an order's lines, `(product id, quantity)`, ask for more
    /// units than one order may take. Lines, not a reservation type, so that the catalog
    /// and orders depend on the limits and not the other way round.
    pub fn check(&self, lines: impl IntoIterator<Item = (i64, i64)>) -> Result<(), AppError> {
        // Per product, however many lines name it: five lines of 100 are 500 of one.
        let mut per_product: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
        let mut total = 0i64;
        for (product, quantity) in lines {
            let units = per_product.entry(product).or_default();
            *units = units.saturating_add(quantity.max(0));
            total = total.saturating_add(quantity.max(0));
        }
        if let Some((product, units)) = per_product.iter().find(|(_, u)| **u > i64::from(self.max_units_per_item)) {
            return Err(AppError::BadRequest(format!(
                "product {product} asks for {units} units; one order takes at most {} of a product",
                self.max_units_per_item
            )));
        }
        if total > i64::from(self.max_units_per_order) {
            return Err(AppError::BadRequest(format!(
                "the order asks for {total} units; one order takes at most {} in all",
                self.max_units_per_order
            )));
        }
        Ok(())
    }
}

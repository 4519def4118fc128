//! A few products so a fresh shop has something to browse, search and buy.

use anyhow::{Context, Result, bail};
use hale_core::ClusterConfig;
use hale_shop::auth::TokenResponse;
use hale_shop::catalog::{CreateProduct, ProductPage};

const PRODUCTS: &[(&str, &str, i64, &[&str])] = &[
    ("Brass desk lamp", "Adjustable arm, warm 2700K bulb, solid brass base", 8900, &["lighting", "office"]),
    ("Linen reading lamp", "Floor lamp with a linen shade for the reading corner", 12900, &["lighting", "living"]),
    ("Walnut desk", "Solid walnut desk with cable tray, 140 x 70 cm", 74900, &["furniture", "office"]),
    ("Ergonomic chair", "Mesh back, adjustable lumbar support and armrests", 39900, &["furniture", "office"]),
    ("Pour-over kettle", "Gooseneck kettle with thermometer, 1 litre", 5400, &["kitchen", "coffee"]),
    ("Ceramic coffee mug", "Stoneware mug, 350 ml, dishwasher safe", 1800, &["kitchen", "coffee"]),
    ("Espresso grinder", "Conical burr grinder with 40 settings", 21900, &["kitchen", "coffee"]),
    ("Wool throw blanket", "Merino wool throw, 130 x 170 cm", 9900, &["living", "textiles"]),
    ("Mechanical keyboard", "Tenkeyless keyboard with tactile switches", 12900, &["office", "electronics"]),
    ("Noise-cancelling headphones", "Over-ear, 30 hours of battery", 29900, &["electronics", "audio"]),
    ("Bookshelf speaker pair", "Passive two-way speakers, walnut veneer", 34900, &["electronics", "audio", "living"]),
    ("Cast iron skillet", "Pre-seasoned 26 cm skillet", 4900, &["kitchen"]),
];

/// Stock of each seeded product: enough for days of demo load.
const SEED_STOCK: i64 = 1_000_000;

pub async fn seed_if_empty(gateway: &str, cluster: &ClusterConfig) -> Result<()> {
    let client = hale_client::tls::builder().timeout(std::time::Duration::from_secs(10)).build()?;
    let page: ProductPage = client
        .get(format!("{gateway}/api/products?limit=1"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("reading the catalog's first page")?;
    if page.total > 0 {
        return Ok(());
    }
    let token = admin_token(&client, gateway, cluster).await?;
    for &(name, description, price_cents, tags) in PRODUCTS {
        let product = CreateProduct {
            name: name.into(),
            description: description.into(),
            price_cents,
            stock: SEED_STOCK,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        };
        client
            .post(format!("{gateway}/api/products"))
            .bearer_auth(&token)
            .json(&product)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("publishing {name}"))?;
    }
    println!("hale: seeded the catalog with {} products", PRODUCTS.len());
    Ok(())
}

/// A token of the cluster's `admin` demo login, which may publish products.
pub async fn admin_token(client: &reqwest::Client, gateway: &str, cluster: &ClusterConfig) -> Result<String> {
    let Some(admin) = cluster.demo_logins.iter().find(|l| l.username == "admin") else {
        bail!("no `admin` demo login in the cluster config to publish products with");
    };
    let form = [("grant_type", "password"), ("username", &admin.username), ("password", admin.password.expose())];
    let answer: TokenResponse = client
        .post(format!("{gateway}/oauth/token"))
        .form(&form)
        .send()
        .await?
        .error_for_status()
        .context("logging in as admin")?
        .json()
        .await
        .context("reading the admin's token")?;
    Ok(answer.access_token)
}

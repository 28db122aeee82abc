use actix::Message;
use serde::{Deserialize, Serialize};

use super::CatalogError;

/// A product of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    /// Identifier, assigned by the database.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Price, a non-negative number.
    pub price: f64,
    /// Optional description.
    #[serde(default)]
    pub description: Option<String>,
}

/// The body of `POST /products`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// Display name, 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Price, from 0 to 10^12.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_f64)]
    pub price: f64,
    /// Optional description, at most 2000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
}

/// The body of `PUT /products/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    /// New display name, 1 to 200 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// New price, from 0 to 10^12.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_f64)]
    pub price: Option<f64>,
    /// New description, at most 2000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
}

/// Largest product name, in characters.
const MAX_NAME: usize = 200;
/// Largest price.
const MAX_PRICE: f64 = 1e12;
/// Largest product description, in characters.
const MAX_DESCRIPTION: usize = 2000;

fn check_name(name: &str) -> Result<(), CatalogError> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME {
        return Err(CatalogError::Invalid("name must be 1 to 200 characters"));
    }
    Ok(())
}

fn check_price(price: f64) -> Result<(), CatalogError> {
    if !price.is_finite() || !(0.0..=MAX_PRICE).contains(&price) {
        return Err(CatalogError::Invalid(
            "price must be a number from 0 to 10^12",
        ));
    }
    Ok(())
}

fn check_description(description: Option<&str>) -> Result<(), CatalogError> {
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
        return Err(CatalogError::Invalid(
            "description must be at most 2000 characters",
        ));
    }
    Ok(())
}

impl NewProduct {
    /// Checks the fields.
    ///
    /// # Errors
    /// [`CatalogError::Invalid`] naming the first bad field.
    pub fn validate(&self) -> Result<(), CatalogError> {
        check_name(&self.name)?;
        check_price(self.price)?;
        check_description(self.description.as_deref())
    }
}

impl ProductPatch {
    /// Checks the fields present.
    ///
    /// # Errors
    /// [`CatalogError::Invalid`] naming the first bad field.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        if let Some(price) = self.price {
            check_price(price)?;
        }
        check_description(self.description.as_deref())
    }
}

/// Asks for every product, by id; answers the list.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Product>, CatalogError>")]
pub struct ListProducts;

/// Asks for one product; answers it, or `None` when there is no such id.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Product>, CatalogError>")]
pub struct GetProduct(pub i64);

/// Inserts a product; answers it with its new id.
#[derive(Debug, Message)]
#[rtype(result = "Result<Product, CatalogError>")]
pub struct CreateProduct(pub NewProduct);

/// Changes the fields present in the patch; answers the product, or `None` when absent.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Product>, CatalogError>")]
pub struct UpdateProduct(pub i64, pub ProductPatch);

/// Deletes a product; answers whether it existed.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, CatalogError>")]
pub struct DeleteProduct(pub i64);

//! Users, products and orders, as the platform describes them.

use async_trait::async_trait;

use super::*;

/// Users, products and orders, as the platform describes them.
#[async_trait]
pub trait Directory: Send + Sync {
    async fn put_user(&self, user: &User) -> StoreResult<()>;

    async fn user(&self, id: &str) -> StoreResult<Option<User>>;

    async fn put_product(&self, product: &Product) -> StoreResult<()>;

    async fn product(&self, id: &str) -> StoreResult<Option<Product>>;

    async fn put_order(&self, order: &Order) -> StoreResult<()>;

    async fn order(&self, id: &str) -> StoreResult<Option<Order>>;
}

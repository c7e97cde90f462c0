//! The platform's reference data: users, products and orders.

use super::*;
use crate::model::{Order, Product, User};

impl ChatService {
    /// The platform registers (or replaces) a user.
    pub async fn put_user(&self, caller: &Claims, user: &User) -> Result<(), ServiceError> {
        require(caller, &[Role::Platform])?;
        Ok(self.store.put_user(user).await?)
    }

    /// The platform registers (or replaces) a product.
    pub async fn put_product(
        &self,
        caller: &Claims,
        product: &Product,
    ) -> Result<(), ServiceError> {
        require(caller, &[Role::Platform])?;
        Ok(self.store.put_product(product).await?)
    }

    /// The platform registers (or replaces) an order.
    pub async fn put_order(&self, caller: &Claims, order: &Order) -> Result<(), ServiceError> {
        require(caller, &[Role::Platform])?;
        Ok(self.store.put_order(order).await?)
    }
}

//! The platform's reference data: users, products and orders.

use super::*;
use crate::model::{Order, Product, User};

/// One entry of the platform's reference data, registered or replaced whole.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    User(User),
    Product(Product),
    Order(Order),
}

impl ChatService {
    /// The platform registers (or replaces) a user, product or order.
    pub async fn put_record(&self, caller: &Claims, record: &Record) -> Result<(), ServiceError> {
        require(caller, &[Role::Platform])?;
        match record {
            Record::User(user) => self.store.put_user(user).await?,
            Record::Product(product) => self.store.put_product(product).await?,
            Record::Order(order) => self.store.put_order(order).await?,
        }
        Ok(())
    }
}

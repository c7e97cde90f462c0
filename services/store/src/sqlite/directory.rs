//! SQLite: the `Directory` role of the store.

use async_trait::async_trait;
use chat_core::store::Directory;

use super::*;

#[async_trait]
impl Directory for SqliteStore {
    async fn put_user(&self, u: &User) -> StoreResult<()> {
        self.execute(
            "INSERT INTO users (id, display_name, avatar_url, email, locale, seller) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET \
             display_name = ?2, avatar_url = ?3, email = ?4, locale = ?5, seller = ?6",
            vec![
                u.id.clone().into(),
                u.display_name.clone().into(),
                u.avatar_url.clone().into(),
                u.email.clone().into(),
                u.locale.clone().into(),
                u.seller.into(),
            ],
        )
        .await
        .map(drop)
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        self.query_one(
            "SELECT id, display_name, avatar_url, email, locale, seller FROM users WHERE id = ?1",
            vec![id.to_owned().into()],
            |r| {
                Ok(User {
                    id: r.get(0)?,
                    display_name: r.get(1)?,
                    avatar_url: r.get(2)?,
                    email: r.get(3)?,
                    locale: r.get(4)?,
                    seller: r.get(5)?,
                })
            },
        )
        .await
    }

    async fn put_product(&self, p: &Product) -> StoreResult<()> {
        self.execute(
            "INSERT INTO products (id, seller_id, title, price, currency, image_url) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET \
             seller_id = ?2, title = ?3, price = ?4, currency = ?5, image_url = ?6",
            vec![
                p.id.clone().into(),
                p.seller_id.clone().into(),
                p.title.clone().into(),
                p.price.into(),
                p.currency.clone().into(),
                p.image_url.clone().into(),
            ],
        )
        .await
        .map(drop)
    }

    async fn product(&self, id: &str) -> StoreResult<Option<Product>> {
        self.query_one(
            "SELECT id, seller_id, title, price, currency, image_url FROM products WHERE id = ?1",
            vec![id.to_owned().into()],
            |r| {
                Ok(Product {
                    id: r.get(0)?,
                    seller_id: r.get(1)?,
                    title: r.get(2)?,
                    price: r.get(3)?,
                    currency: r.get(4)?,
                    image_url: r.get(5)?,
                })
            },
        )
        .await
    }

    async fn put_order(&self, o: &Order) -> StoreResult<()> {
        self.execute(
            "INSERT INTO orders (id, buyer_id, seller_id, summary) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET buyer_id = ?2, seller_id = ?3, summary = ?4",
            vec![
                o.id.clone().into(),
                o.buyer_id.clone().into(),
                o.seller_id.clone().into(),
                o.summary.clone().into(),
            ],
        )
        .await
        .map(drop)
    }

    async fn order(&self, id: &str) -> StoreResult<Option<Order>> {
        self.query_one(
            "SELECT id, buyer_id, seller_id, summary FROM orders WHERE id = ?1",
            vec![id.to_owned().into()],
            |r| {
                Ok(Order {
                    id: r.get(0)?,
                    buyer_id: r.get(1)?,
                    seller_id: r.get(2)?,
                    summary: r.get(3)?,
                })
            },
        )
        .await
    }
}

//! SQLite: the `Directory` role of the store.

use async_trait::async_trait;
use chat_core::store::Directory;

use super::*;

#[async_trait]
impl Directory for SqliteStore {
    async fn put_user(&self, user: &User) -> StoreResult<()> {
        let u = user.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO users (id, display_name, avatar_url, email, locale, seller) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET \
                 display_name = ?2, avatar_url = ?3, email = ?4, locale = ?5, seller = ?6",
                params![
                    u.id,
                    u.display_name,
                    u.avatar_url,
                    u.email,
                    u.locale,
                    u.seller
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT id, display_name, avatar_url, email, locale, seller FROM users WHERE id = ?1",
                [id],
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
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn put_product(&self, product: &Product) -> StoreResult<()> {
        let p = product.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO products (id, seller_id, title, price, currency, image_url) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET \
                 seller_id = ?2, title = ?3, price = ?4, currency = ?5, image_url = ?6",
                params![p.id, p.seller_id, p.title, p.price, p.currency, p.image_url],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn product(&self, id: &str) -> StoreResult<Option<Product>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT id, seller_id, title, price, currency, image_url FROM products WHERE id = ?1",
                [id],
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
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn put_order(&self, order: &Order) -> StoreResult<()> {
        let o = order.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO orders (id, buyer_id, seller_id, summary) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET buyer_id = ?2, seller_id = ?3, summary = ?4",
                params![o.id, o.buyer_id, o.seller_id, o.summary],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn order(&self, id: &str) -> StoreResult<Option<Order>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT id, buyer_id, seller_id, summary FROM orders WHERE id = ?1",
                [id],
                |r| {
                    Ok(Order {
                        id: r.get(0)?,
                        buyer_id: r.get(1)?,
                        seller_id: r.get(2)?,
                        summary: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(backend)
        })
        .await
    }
}

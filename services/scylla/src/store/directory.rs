//! ScyllaDB: the `Directory` role of the store.

use async_trait::async_trait;
use chat_core::store::Directory;

use super::*;

#[async_trait]
impl Directory for ScyllaStore {
    async fn put_user(&self, user: &User) -> StoreResult<()> {
        self.exec(
            &self.statements.put_user,
            (
                &user.id,
                &user.display_name,
                &user.avatar_url,
                &user.email,
                &user.locale,
                user.seller,
            ),
        )
        .await?;
        Ok(())
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        type Columns = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<bool>,
        );
        let row: Option<Columns> = self.first(&self.statements.get_user, (id,)).await?;
        Ok(row.map(
            |(id, display_name, avatar_url, email, locale, seller)| User {
                display_name: display_name.unwrap_or_else(|| id.clone()),
                id,
                avatar_url,
                email,
                locale: locale.unwrap_or_else(|| "vi".into()),
                // Null: registered before migration 0008, when anyone could
                // be contacted; CQL cannot backfill from other tables, so
                // such rows keep that until the platform registers them again.
                seller: seller.unwrap_or(true),
            },
        ))
    }

    async fn put_product(&self, p: &Product) -> StoreResult<()> {
        self.exec(
            &self.statements.put_product,
            (
                &p.id,
                &p.seller_id,
                &p.title,
                p.price,
                &p.currency,
                &p.image_url,
            ),
        )
        .await?;
        Ok(())
    }

    async fn product(&self, id: &str) -> StoreResult<Option<Product>> {
        type Columns = (
            String,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Columns> = self.first(&self.statements.get_product, (id,)).await?;
        Ok(row.map(
            |(id, seller_id, title, price, currency, image_url)| Product {
                id,
                seller_id: seller_id.unwrap_or_default(),
                title: title.unwrap_or_default(),
                price: price.unwrap_or_default(),
                currency: currency.unwrap_or_default(),
                image_url,
            },
        ))
    }

    async fn put_order(&self, o: &Order) -> StoreResult<()> {
        self.exec(
            &self.statements.put_order,
            (&o.id, &o.buyer_id, &o.seller_id, &o.summary),
        )
        .await?;
        Ok(())
    }

    async fn order(&self, id: &str) -> StoreResult<Option<Order>> {
        type Columns = (String, Option<String>, Option<String>, Option<String>);
        let row: Option<Columns> = self.first(&self.statements.get_order, (id,)).await?;
        Ok(row.map(|(id, buyer_id, seller_id, summary)| Order {
            id,
            buyer_id: buyer_id.unwrap_or_default(),
            seller_id: seller_id.unwrap_or_default(),
            summary: summary.unwrap_or_default(),
        }))
    }
}

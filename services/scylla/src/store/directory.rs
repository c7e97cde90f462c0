//! ScyllaDB: the `Directory` role of the store, with its prepared statements
//! beside the queries that bind them, so a CQL text and its values change
//! together.

use async_trait::async_trait;
use chat_core::store::Directory;

use super::*;

/// Prepared once when the store opens.
pub(super) struct Statements {
    put_user: PreparedStatement,
    get_user: PreparedStatement,
    put_product: PreparedStatement,
    get_product: PreparedStatement,
    put_order: PreparedStatement,
    get_order: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(prepare: &Prepare<'_>) -> StoreResult<Statements> {
        let ks = prepare.keyspace;
        Ok(Statements {
            put_user: prepare.cql(format!("INSERT INTO {ks}.users (id, display_name, avatar_url, email, locale, seller) VALUES (?, ?, ?, ?, ?, ?)"), true).await?,
            get_user: prepare.cql(format!("SELECT id, display_name, avatar_url, email, locale, seller FROM {ks}.users WHERE id = ?"), true).await?,
            put_product: prepare.cql(format!("INSERT INTO {ks}.products (id, seller_id, title, price, currency, image_url) VALUES (?, ?, ?, ?, ?, ?)"), true).await?,
            get_product: prepare.cql(format!("SELECT id, seller_id, title, price, currency, image_url FROM {ks}.products WHERE id = ?"), true).await?,
            put_order: prepare.cql(format!("INSERT INTO {ks}.orders (id, buyer_id, seller_id, summary) VALUES (?, ?, ?, ?)"), true).await?,
            get_order: prepare.cql(format!("SELECT id, buyer_id, seller_id, summary FROM {ks}.orders WHERE id = ?"), true).await?,
        })
    }
}

#[async_trait]
impl Directory for ScyllaStore {
    async fn put_user(&self, user: &User) -> StoreResult<()> {
        self.exec(
            &self.statements.directory.put_user,
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
        let row: Option<Columns> = self
            .first(&self.statements.directory.get_user, (id,))
            .await?;
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
            &self.statements.directory.put_product,
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
        let row: Option<Columns> = self
            .first(&self.statements.directory.get_product, (id,))
            .await?;
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
            &self.statements.directory.put_order,
            (&o.id, &o.buyer_id, &o.seller_id, &o.summary),
        )
        .await?;
        Ok(())
    }

    async fn order(&self, id: &str) -> StoreResult<Option<Order>> {
        type Columns = (String, Option<String>, Option<String>, Option<String>);
        let row: Option<Columns> = self
            .first(&self.statements.directory.get_order, (id,))
            .await?;
        Ok(row.map(|(id, buyer_id, seller_id, summary)| Order {
            id,
            buyer_id: buyer_id.unwrap_or_default(),
            seller_id: seller_id.unwrap_or_default(),
            summary: summary.unwrap_or_default(),
        }))
    }
}

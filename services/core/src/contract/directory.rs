//! Contract: Users, products and orders; the readiness probe.

use super::*;

pub async fn ping_answers(store: &dyn ChatStore) {
    store.ping().await.expect("a working store answers a ping");
}

pub async fn reference_data_round_trips(store: &dyn ChatStore) {
    let ns = namespace("ref");
    let user = User {
        id: format!("{ns}-u"),
        display_name: "Nguyễn Văn A".into(),
        avatar_url: Some("https://cdn.example/a.png".into()),
        email: None,
        locale: "vi".into(),
        seller: false,
    };
    store.put_user(&user).await.unwrap();
    assert_eq!(store.user(&user.id).await.unwrap(), Some(user.clone()));
    let renamed = User {
        display_name: "Shop A".into(),
        seller: true,
        ..user.clone()
    };
    store.put_user(&renamed).await.unwrap();
    assert_eq!(store.user(&user.id).await.unwrap(), Some(renamed));
    assert_eq!(store.user(&format!("{ns}-nobody")).await.unwrap(), None);

    let product = Product {
        id: format!("{ns}-p"),
        seller_id: format!("{ns}-s"),
        title: "Áo thun".into(),
        price: 199_000,
        currency: "VND".into(),
        image_url: None,
    };
    store.put_product(&product).await.unwrap();
    assert_eq!(store.product(&product.id).await.unwrap(), Some(product));
    let order = Order {
        id: format!("{ns}-o"),
        buyer_id: format!("{ns}-b"),
        seller_id: format!("{ns}-s"),
        summary: "2 sản phẩm".into(),
    };
    store.put_order(&order).await.unwrap();
    assert_eq!(store.order(&order.id).await.unwrap(), Some(order));
}

//! Opening threads and who may read them.

use super::*;

impl ChatService {
    /// Opens (or finds) a thread for the caller. Product context shows up as
    /// a product-card system message whenever it changes.
    ///
    /// A buyer opens the thread with a seller (an account the platform
    /// registered as one); either party opens the thread of their order, on
    /// the side their token says. Someone else's order and an account that
    /// is not a seller answer like missing ones, so that ids cannot be
    /// probed.
    pub async fn open_thread(
        &self,
        caller: &Claims,
        from: OpenFrom,
    ) -> Result<Thread, ServiceError> {
        let (spec, card) = match from {
            OpenFrom::Order { order_id } => {
                let order = self
                    .store
                    .order(&order_id)
                    .await?
                    .filter(|order| match caller.role {
                        Role::Buyer => order.buyer_id == caller.sub,
                        Role::Seller => order.seller_id == caller.sub,
                        _ => false,
                    })
                    .ok_or(ServiceError::NotFound("order"))?;
                let card = Card::Order {
                    order_id: order.id.clone(),
                    summary: order.summary.clone(),
                };
                let spec = OpenThread {
                    key: ThreadKey::Order {
                        order_id: order.id.clone(),
                    },
                    buyer_id: order.buyer_id,
                    seller_id: order.seller_id,
                };
                (spec, Some((card, None)))
            }
            OpenFrom::Seller {
                seller_id,
                product_id,
            } => {
                if caller.role != Role::Buyer {
                    return Err(ServiceError::Forbidden);
                }
                if seller_id == caller.sub {
                    return Err(ServiceError::invalid(
                        ErrorCode::InvalidField,
                        "cannot open a thread with yourself",
                    ));
                }
                let contactable = self.may_meet(&caller.sub, &seller_id)
                    && self
                        .store
                        .user(&seller_id)
                        .await?
                        .is_some_and(|user| user.seller);
                if !contactable {
                    return Err(ServiceError::NotFound("seller"));
                }
                let card = match product_id {
                    Some(product_id) => {
                        let product = self
                            .store
                            .product(&product_id)
                            .await?
                            .ok_or(ServiceError::NotFound("product"))?;
                        if product.seller_id != seller_id {
                            return Err(ServiceError::invalid(
                                ErrorCode::InvalidField,
                                "the product is not sold by this seller",
                            ));
                        }
                        Some((
                            Card::Product {
                                product_id: product.id.clone(),
                                title: product.title,
                                price: product.price,
                                currency: product.currency,
                                image_url: product.image_url,
                            },
                            Some(product.id),
                        ))
                    }
                    None => None,
                };
                let spec = OpenThread {
                    key: ThreadKey::Pair {
                        buyer_id: caller.sub.clone(),
                        seller_id: seller_id.clone(),
                    },
                    buyer_id: caller.sub.clone(),
                    seller_id,
                };
                (spec, card)
            }
        };
        // Starting threads with many sellers is how spam begins: a buyer
        // starts a limited number per hour; reopening one is free.
        if matches!(spec.key, ThreadKey::Pair { .. })
            && self.store.find_thread(&spec.key).await?.is_none()
            && let Err(limited) = self.limiter.check_new_thread(&caller.sub)
        {
            tracing::info!(user_id = caller.sub, ?limited, "new thread limited");
            return Err(ServiceError::Limited(limited));
        }
        let opened = self.store.open_thread(&spec).await?;
        if opened.created {
            self.membership.changed(&opened.thread.id);
            tracing::info!(thread_id = %opened.thread.id, buyer = %spec.buyer_id, seller = %spec.seller_id, "thread created");
        }
        let mut thread = opened.thread;
        let Some((card, sets_product)) = card else {
            if opened.created {
                self.emit_v2_thread(&thread, &[&thread.buyer_id, &thread.seller_id])
                    .await;
            }
            return Ok(thread);
        };
        let wanted = match &sets_product {
            Some(product_id) => thread.product_id.as_ref() != Some(product_id),
            None => opened.created,
        };
        if wanted {
            let (id, created_at) = crate::new_timed_id();
            let system = NewMessage {
                id,
                thread_id: thread.id.clone(),
                from: String::new(),
                kind: MessageType::System,
                content: String::new(),
                card: Some(card),
                client_msg_id: None,
                created_at,
                sets_product,
                owes_push: false,
            };
            let appended = self.store.append_message(&system).await?;
            self.deliver_stored(&appended, None).await;
            thread = appended.thread;
        }
        Ok(thread)
    }

    /// A thread the caller may read: a participant, or an admin.
    pub async fn readable_thread(
        &self,
        caller: &Claims,
        thread_id: &str,
    ) -> Result<Thread, ServiceError> {
        let thread = self
            .store
            .thread(thread_id)
            .await?
            .ok_or(ServiceError::NotFound("thread"))?;
        if thread.is_participant(&caller.sub) || caller.role == Role::Admin {
            Ok(thread)
        } else {
            // Same answer as a missing thread: ids are not to be probed.
            Err(ServiceError::NotFound("thread"))
        }
    }
}

//! rmqtt's router, wrapped to report which topic filters this node's
//! clients subscribe to: the first subscription to a filter and the end of
//! the last one go to a `TopicInterest` (the cluster backbone), so a node
//! receives from the other nodes only what its own clients want.
//! Routing itself is rmqtt's `DefaultRouter`, unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chat_core::outbound::TopicInterest;
use parking_lot::Mutex;
use rmqtt::Result;
use rmqtt::context::ServerContext;
use rmqtt::router::{DefaultRouter, Router};
use rmqtt::types::{
    AllRelationsMap, Id, NodeId, Route, SubRelationsMap, SubsSearchParams, SubsSearchResult,
    SubscriptionOptions, TopicName,
};
use rmqtt::utils::Counter;

pub struct InterestRouter {
    inner: DefaultRouter,
    interest: Arc<dyn TopicInterest>,
    /// Subscriptions per topic filter on this node.
    counts: Mutex<HashMap<String, usize>>,
}

impl InterestRouter {
    pub fn new(scx: ServerContext, interest: Arc<dyn TopicInterest>) -> Self {
        InterestRouter {
            inner: DefaultRouter::new(Some(scx)),
            interest,
            counts: Mutex::new(HashMap::new()),
        }
    }
}

/// `$share/…` (persist workers on the inbound topics) and other `$`
/// filters are this node's business only.
fn routed(topic_filter: &str) -> bool {
    !topic_filter.starts_with('$')
}

#[async_trait]
impl Router for InterestRouter {
    async fn add(&self, topic_filter: &str, id: Id, opts: SubscriptionOptions) -> Result<()> {
        self.inner.add(topic_filter, id, opts).await?;
        if routed(topic_filter) {
            let first = {
                let mut counts = self.counts.lock();
                let n = counts.entry(topic_filter.to_owned()).or_default();
                *n += 1;
                *n == 1
            };
            if first {
                self.interest.subscribed(topic_filter).await;
            }
        }
        Ok(())
    }

    async fn remove(&self, topic_filter: &str, id: Id) -> Result<bool> {
        let removed = self.inner.remove(topic_filter, id).await?;
        if removed && routed(topic_filter) {
            let last = {
                let mut counts = self.counts.lock();
                match counts.get_mut(topic_filter) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        false
                    }
                    Some(_) => {
                        counts.remove(topic_filter);
                        true
                    }
                    None => false,
                }
            };
            if last {
                self.interest.unsubscribed(topic_filter);
            }
        }
        Ok(removed)
    }

    async fn matches(&self, id: Id, topic: &TopicName) -> Result<SubRelationsMap> {
        self.inner.matches(id, topic).await
    }

    async fn is_online(&self, node_id: NodeId, client_id: &str) -> bool {
        self.inner.is_online(node_id, client_id).await
    }

    async fn gets(&self, limit: usize) -> Vec<Route> {
        self.inner.gets(limit).await
    }

    async fn get(&self, topic: &str) -> Result<Vec<Route>> {
        self.inner.get(topic).await
    }

    async fn query_subscriptions(&self, q: &SubsSearchParams) -> Vec<SubsSearchResult> {
        self.inner.query_subscriptions(q).await
    }

    async fn topics_tree(&self) -> usize {
        self.inner.topics_tree().await
    }

    fn topics(&self) -> Counter {
        self.inner.topics()
    }

    fn routes(&self) -> Counter {
        self.inner.routes()
    }

    fn merge_topics(&self, topics_map: &rmqtt::types::HashMap<NodeId, Counter>) -> Counter {
        self.inner.merge_topics(topics_map)
    }

    fn merge_routes(&self, routes_map: &rmqtt::types::HashMap<NodeId, Counter>) -> Counter {
        self.inner.merge_routes(routes_map)
    }

    async fn list_topics(&self, top: usize) -> Vec<String> {
        self.inner.list_topics(top).await
    }

    async fn list_relations(&self, top: usize) -> Vec<serde_json::Value> {
        self.inner.list_relations(top).await
    }

    fn relations(&self) -> &AllRelationsMap {
        self.inner.relations()
    }
}

//! Moderation in the send flow: the pure pipeline (`chat-moderation`)
//! plus what it needs from the store — the sender's last messages (numbers
//! split over messages), the admin keyword lists — and the records it
//! leaves (original text, findings) for support staff.

use std::sync::Arc;

use chat_moderation::keywords::Keywords;
use chat_moderation::{Moderator, Outcome, Policy};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::model::{KeywordList, MessageRange, ModerationKind, ModerationRecord};
use crate::store::{ChatStore, StoreResult};

/// Section `[moderation]` of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModerationConfig {
    /// Off: messages are stored as sent (not recommended).
    pub enabled: bool,
    /// What to do per category: `mask` (default), `block`, `flag`, `allow`.
    pub policy: Policy,
    /// How many of the sender's previous messages can complete a number.
    pub recent_messages: usize,
    /// …and how old they may be.
    pub recent_window_secs: u64,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        ModerationConfig {
            enabled: true,
            policy: Policy::default(),
            recent_messages: 3,
            recent_window_secs: 600,
        }
    }
}

pub struct Moderation {
    config: ModerationConfig,
    store: Arc<dyn ChatStore>,
    /// Rebuilt when the keyword lists change.
    moderator: RwLock<Arc<Moderator>>,
}

/// Keyword lists as the store keeps them, as the pipeline wants them.
fn keywords_of(rows: &[(KeywordList, String)]) -> Keywords {
    let pick = |list: KeywordList| -> Vec<String> {
        rows.iter()
            .filter(|(l, _)| *l == list)
            .map(|(_, k)| k.clone())
            .collect()
    };
    Keywords::new(&pick(KeywordList::Block), &pick(KeywordList::Flag))
}

impl Moderation {
    /// Loads the keyword lists from the store.
    pub async fn load(config: ModerationConfig, store: Arc<dyn ChatStore>) -> StoreResult<Self> {
        let keywords = keywords_of(&store.keywords().await?);
        Ok(Moderation {
            moderator: RwLock::new(Arc::new(Moderator::new(config.policy.clone(), keywords))),
            config,
            store,
        })
    }

    /// A pipeline with no keywords, before the store is reachable (tests).
    pub fn without_keywords(config: ModerationConfig, store: Arc<dyn ChatStore>) -> Self {
        Moderation {
            moderator: RwLock::new(Arc::new(Moderator::new(
                config.policy.clone(),
                Keywords::empty(),
            ))),
            config,
            store,
        }
    }

    /// Reads the keyword lists again (after an admin change here, and
    /// periodically for changes made through another node).
    pub async fn reload(&self) -> StoreResult<()> {
        let keywords = keywords_of(&self.store.keywords().await?);
        *self.moderator.write() = Arc::new(Moderator::new(self.config.policy.clone(), keywords));
        Ok(())
    }

    fn moderator(&self) -> Arc<Moderator> {
        self.moderator.read().clone()
    }

    /// What the pipeline would do to `text` on its own (no previous
    /// messages): for support staff and tuning.
    pub fn preview(&self, text: &str) -> Outcome {
        self.moderator().moderate(text, &[])
    }

    /// Moderates a message `user_id` is sending to `thread_id`.
    pub async fn check(&self, thread_id: &str, user_id: &str, text: &str) -> StoreResult<Outcome> {
        let moderator = self.moderator();
        if !self.config.enabled {
            return Ok(Outcome {
                text: text.to_owned(),
                findings: Vec::new(),
            });
        }
        let mut recent = Vec::new();
        if self.config.recent_messages > 0 && moderator.needs_recent(text) {
            // The sender's previous message must be stored to be read.
            crate::pipeline::in_turn().await;
            let since = crate::now_millis() - (self.config.recent_window_secs * 1000) as i64;
            let newest = self
                .store
                .messages(thread_id, &MessageRange::default(), 10)
                .await?;
            // The sender's own messages right before this one, as long as
            // the other side did not answer in between.
            for m in newest.iter().rev() {
                if m.from != user_id || m.created_at < since {
                    break;
                }
                recent.push(m.content.clone());
                if recent.len() == self.config.recent_messages {
                    break;
                }
            }
            recent.reverse();
        }
        let recent: Vec<&str> = recent.iter().map(String::as_str).collect();
        Ok(moderator.moderate(text, &recent))
    }

    /// The record an outcome leaves, if any: masked (kept), flagged or
    /// blocked (queued for review).
    pub fn record_of(
        outcome: &Outcome,
        thread_id: &str,
        user_id: &str,
        original: &str,
        message_id: Option<&str>,
    ) -> Option<ModerationRecord> {
        let kind = if outcome.blocked() {
            ModerationKind::Blocked
        } else if outcome.flagged() {
            ModerationKind::Flagged
        } else if outcome.masked() {
            ModerationKind::Masked
        } else {
            return None;
        };
        let mut categories: Vec<String> = Vec::new();
        let mut keywords: Vec<String> = Vec::new();
        for f in &outcome.findings {
            let c = f.category.as_str().to_owned();
            if !categories.contains(&c) {
                categories.push(c);
            }
            if let Some(k) = &f.keyword
                && !keywords.contains(k)
            {
                keywords.push(k.clone());
            }
        }
        Some(ModerationRecord {
            id: crate::new_id(),
            thread_id: thread_id.to_owned(),
            user_id: user_id.to_owned(),
            message_id: message_id.map(str::to_owned),
            kind,
            categories,
            original: original.to_owned(),
            keywords,
            reported_by: None,
            needs_review: kind != ModerationKind::Masked,
            resolution: None,
            resolved_by: None,
            resolved_at: None,
            created_at: crate::now_millis(),
        })
    }
}

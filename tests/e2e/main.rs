//! End-to-end tests: the real `chatd` binary, real sockets, real clients.
//! Compiled as an integration test of the `chatd` package so that cargo
//! builds the binary first and tells us where it is.

mod abuse;
mod attachments;
mod bad_input;
mod chat_flow;
mod cluster;
mod cors;
mod demo;
mod devices;
mod drain;
mod durability;
mod jetstream;
mod keys;
mod limits;
mod moderation;
mod notify;
mod openapi;
mod ops;
mod protocol_v2;
mod push;
mod scylla;
mod security;
mod session_resume;
mod stock_clients;
mod web_browser;
mod web_sdk;

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

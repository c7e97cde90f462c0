//! Any string as a topic or filter: parsing never panics, and whatever is
//! recognised as a chat topic is exactly what its constructor builds.
#![no_main]

use chat_protocol::topics::{self, Topic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(topic) = std::str::from_utf8(data) else {
        return;
    };
    match topics::parse(topic) {
        Topic::User(id) => assert_eq!(topics::user(id), topic),
        Topic::Thread(id) => assert_eq!(topics::thread(id), topic),
        Topic::ThreadInbound(id) => assert_eq!(topics::thread_inbound(id), topic),
        Topic::Other => {}
    }
});

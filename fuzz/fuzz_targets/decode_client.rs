//! Any bytes as a client publish: the shape check and the decoder classify
//! them, never panic, never recurse without bound; what decodes re-encodes
//! to something that decodes to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let shaped = chat_protocol::shape::check(data).is_ok();
    let decoded = chat_protocol::decode_client(data);
    if let Ok(event) = &decoded {
        assert!(shaped, "a payload decoded without passing the shape check");
        let again = chat_protocol::decode_client(&chat_protocol::encode(event));
        assert_eq!(again.as_ref(), Ok(event));
    }
    let _ = chat_protocol::send_reference(data);
    let _ = chat_protocol::decode_server(data);
});

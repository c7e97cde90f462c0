//! Release builds embed `web/dist/` (chatd/src/demo.rs); rebuild when a
//! page is added or changed there, not only when an embedded one changes.

fn main() {
    println!("cargo:rerun-if-changed=../web/dist");
    println!("cargo:rerun-if-changed=build.rs");
}

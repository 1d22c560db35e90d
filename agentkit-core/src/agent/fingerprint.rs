//! A stable fingerprint of a model request, journaled with its response.

use crate::provider::CompletionRequest;

/// The field of a journaled model response that holds its request fingerprint.
pub(super) const FINGERPRINT_FIELD: &str = "request_fingerprint";

/// A stable fingerprint (FNV-1a 64 over the canonical JSON) of what a model request asks:
/// system prompt, model, tools, tool choice, response format and messages. Stable across
/// processes and Rust versions, unlike `std`'s hasher.
pub(super) fn request_fingerprint(request: &CompletionRequest) -> String {
    struct Fnv(u64);
    impl std::io::Write for Fnv {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            for b in buf {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let parts = (
        &request.system,
        &request.model,
        &request.tools,
        &request.tool_choice,
        &request.response_format,
        &request.messages,
    );
    // Serialising plain data into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut h, &parts);
    format!("{:016x}", h.0)
}

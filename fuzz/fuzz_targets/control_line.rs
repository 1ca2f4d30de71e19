//! Bytes from a control-socket peer: the bounded line framing, then each line read as a
//! request (what the supervisor receives) and as a reply (what a client receives). Nothing
//! may panic, and a request that reads reads back the same after writing it out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio::io::BufReader;
use zd_core::proto::{LineReader, Reply, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    runtime.block_on(async {
        // A small maximum and buffer, so that over-long lines and lines split across
        // reads both happen on small inputs.
        let mut lines = LineReader::with_max(BufReader::with_capacity(7, data), 256);
        while let Ok(Some(line)) = lines.next_line().await {
            assert!(line.len() <= 256 && !line.contains(&b'\n'));
            if let Ok(request) = serde_json::from_slice::<Request>(&line) {
                let again = serde_json::to_vec(&request).expect("a request serializes");
                let back: Request = serde_json::from_slice(&again).expect("and reads back");
                assert_eq!(back, request);
            }
            let _ = serde_json::from_slice::<Reply>(&line);
        }
    });
});

//! Opening a capture given on the command line: a file (mapped) or `-` for standard input.

use std::io::Read;

use super::CaptureReader;

/// A capture file (mapped), or standard input for `-`, with its size when known (for
/// the progress bar).
pub type Capture = CaptureReader<Box<dyn Read + Send>>;

pub fn open_capture(
    path: &std::path::Path,
) -> Result<(Capture, Option<u64>), Box<dyn std::error::Error + Send + Sync>> {
    let named = |e: crate::capture::CaptureError| format!("{}: {e}", path.display());
    if path.as_os_str() == "-" {
        let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
        return Ok((CaptureReader::new(stdin).map_err(named)?, None));
    }
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = f.metadata().ok().map(|m| m.len());
    Ok((CaptureReader::from_file(f).map_err(named)?, size))
}

//! Opening a capture given on the command line: a file (mapped) or `-` for standard input.

use std::io::Read;

use super::CaptureReader;

/// A capture file (mapped), or standard input for `-`, with its size when known (for
/// the progress bar).
pub type Capture = CaptureReader<Box<dyn Read + Send>>;

/// Frames of a link type the decapsulator cannot read are an error: in a pcap file at
/// once (its header has the one link type), in pcapng at the first such frame.
pub fn open_capture(
    path: &std::path::Path,
) -> Result<(Capture, Option<u64>), Box<dyn std::error::Error + Send + Sync>> {
    let (mut reader, size) = open_any(path)?;
    if let super::CaptureFormat::Pcap { linktype, .. } = reader.format() {
        if !super::linktype::is_supported(linktype) {
            return Err(format!(
                "{}: {}",
                path.display(),
                super::linktype::unsupported_error(linktype)
            )
            .into());
        }
    }
    reader.require_supported_linktype();
    Ok((reader, size))
}

fn open_any(
    path: &std::path::Path,
) -> Result<(Capture, Option<u64>), Box<dyn std::error::Error + Send + Sync>> {
    let named = |e: crate::capture::CaptureError| format!("{}: {e}", path.display());
    if path.as_os_str() == "-" {
        return Ok((CaptureReader::new(stream(None)?).map_err(named)?, None));
    }
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = f.metadata().ok();
    if meta.as_ref().is_some_and(|m| !m.is_file()) {
        // A FIFO or device: read as a stream that a Ctrl-C can end.
        return Ok((CaptureReader::new(stream(Some(f))?).map_err(named)?, None));
    }
    let size = meta.map(|m| m.len());
    Ok((CaptureReader::from_file(f).map_err(named)?, size))
}

/// A stream (stdin for `None`) that ends when a stop is requested ([`crate::sys::signals`]).
#[cfg(unix)]
fn stream(
    f: Option<std::fs::File>,
) -> Result<Box<dyn Read + Send>, Box<dyn std::error::Error + Send + Sync>> {
    let f = match f {
        Some(f) => f,
        None => crate::sys::signals::stdin_file()
            .map_err(|e| format!("cannot read standard input: {e}"))?,
    };
    Ok(Box::new(crate::sys::signals::Interruptible::new(f)))
}

#[cfg(not(unix))]
fn stream(
    f: Option<std::fs::File>,
) -> Result<Box<dyn Read + Send>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(match f {
        Some(f) => Box::new(f),
        None => Box::new(std::io::stdin()),
    })
}

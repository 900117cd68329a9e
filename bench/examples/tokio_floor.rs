//! The floor of a hand-written HTTP/1.1 proxy on tokio: what a data plane
//! that is not pingora's could reach on this machine, before any gateway
//! work. A measuring instrument for `bench/run.sh`'s scenario `floor`, not
//! a proxy to deploy: plain HTTP only, one upstream connection per client
//! connection (kept alive), request heads forwarded as received, and only
//! answers framed by `Content-Length` (the bench's upstream sends those).
//! Anything else closes the connection.
//!
//! Runs on a current-thread runtime, like chasqui's worker, with mimalloc.
//!
//! Usage: `tokio_floor UPSTREAM_ADDR HTTP_ADDR`

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Largest head (request or answer) the floor accepts.
const MAX_HEAD: usize = 16 * 1024;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [upstream, listen] = args.as_slice() else {
        return Err("usage: tokio_floor UPSTREAM_ADDR HTTP_ADDR".into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(serve(upstream.clone(), listen.clone()))
}

async fn serve(upstream: String, listen: String) -> Result<(), String> {
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let (client, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            // A failed or unsupported exchange ends the connection; the
            // floor has no error answers.
            let _ = relay_connection(client, &upstream).await;
        });
    }
}

/// Relays the calls of one client connection over one upstream connection.
async fn relay_connection(mut client: TcpStream, upstream: &str) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let mut from_client = Vec::with_capacity(4096);
    let mut from_up = Vec::with_capacity(4096);
    loop {
        let Some((head, _)) = read_head(&mut client, &mut from_client, true).await? else {
            return Ok(());
        };
        up.write_all(&from_client[..head]).await?;
        from_client.drain(..head);
        let Some((head, length)) = read_head(&mut up, &mut from_up, false).await? else {
            return Ok(());
        };
        let length = length.ok_or_else(unsupported)?;
        let whole = head + length;
        while from_up.len() < whole {
            if up.read_buf(&mut from_up).await? == 0 {
                return Err(unsupported());
            }
        }
        client.write_all(&from_up[..whole]).await?;
        from_up.drain(..whole);
    }
}

/// Reads until `buf` holds a whole head; its length and (for an answer) its
/// `Content-Length`, or `None` at a clean end of stream before any byte of
/// a head.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: bool,
) -> std::io::Result<Option<(usize, Option<usize>)>> {
    loop {
        if !buf.is_empty() {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let parsed = if request {
                httparse::Request::new(&mut fields).parse(buf)
            } else {
                httparse::Response::new(&mut fields).parse(buf)
            };
            match parsed {
                Ok(httparse::Status::Complete(n)) => {
                    let length = if request {
                        None
                    } else {
                        content_length(&fields)
                    };
                    return Ok(Some((n, length)));
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => return Err(unsupported()),
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(unsupported())
            };
        }
    }
}

/// The `Content-Length` among a parsed head's fields.
fn content_length(fields: &[httparse::Header<'_>]) -> Option<usize> {
    let field = fields
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))?;
    std::str::from_utf8(field.value).ok()?.trim().parse().ok()
}

fn unsupported() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "not an exchange the floor relays",
    )
}

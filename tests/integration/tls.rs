//! TLS: the default roots, an extra CA from `ca_cert`, and `insecure_skip_verify`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{one_to, Fixture, FAST_RETRY};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

/// Terminate TLS on a free port with the test certificate and pass the bytes to `target`;
/// the connections it accepted, counted.
async fn tls_front(target: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let certs: Vec<CertificateDer> =
        CertificateDer::pem_file_iter(format!("{FIXTURES}/server.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{FIXTURES}/server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn job(addr: SocketAddr, tls: &str) -> String {
    format!(
        "name = \"t\"\n[request]\nurl = \"https://127.0.0.1:{}/offset\"\n{tls}\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\ntotal = \"$.total\"\n{FAST_RETRY}",
        addr.port()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_an_extra_ca_or_without_verification() {
    let f = Fixture::new(120).await;
    let (front, accepted) = tls_front(f.server.addr).await;

    let message = f.run(&job(front, "")).await.unwrap_err().to_string();
    assert!(message.contains("certificate"), "an unknown issuer is refused: {message}");
    // A certificate that fails verification fails the same way every time: not retried.
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "{message}");
    assert!(!message.contains("attempts"), "one attempt: {message}");

    f.run(&job(front, &format!("ca_cert = \"{FIXTURES}/ca.pem\""))).await.unwrap();
    assert_eq!(f.ids("t"), one_to(120));

    f.run(&job(front, "insecure_skip_verify = true")).await.unwrap();
    assert_eq!(f.ids("t"), one_to(120));
}

#[test]
fn a_missing_ca_cert_is_a_job_error() {
    let text = "name = \"t\"\n[request]\nurl = \"https://127.0.0.1:9/\"\nca_cert = \"nope/ca.pem\"\n[records]\npath = \"$[*]\"\n[pagination]\nkind = \"none\"\n";
    let err = harvest::job::parse(std::path::Path::new("jobs/x.toml"), text, &Default::default(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("jobs/x.toml:4:11: ca_cert jobs/nope/ca.pem is not a readable file"), "{err}");
}

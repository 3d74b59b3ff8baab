//! Package bytes in an S3-compatible object store.
//!
//! Object I/O and GET/PUT presigning go through `object_store`. Presigned
//! POST policies (S3's browser-upload form, which no maintained crate
//! produces) are signed here with SigV4, as AWS documents them.
//!
//! Keys: blobs at `<prefix>/sha256/<2 hex>/<64 hex>`, client uploads staged
//! at `<prefix>/uploads/<upload id>` until they are processed.

use std::io;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use hmac::{KeyInit, Mac};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use stackyard_core::Digest;
use tokio::io::AsyncReadExt;

use crate::blob::{BlobRange, BlobReader, BlobStore, DirectUploads, PresignedPost, StagedObject};

/// Where the bucket is and how to sign for it.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, without slashes at either end; may be empty.
    pub prefix: String,
    /// An S3-compatible server (path-style addressing); `None`: AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Longest the store may stay silent (to connect, answer, or between
    /// bytes of a body), and the time retries may take: past it the caller
    /// gets an error instead of waiting on a store that hangs. Transfers
    /// themselves have no overall limit, since packages may be gigabytes.
    pub timeout: Duration,
}

pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    config: S3Config,
}

/// Parts uploaded at once while moving a spool file into the store.
const UPLOAD_CONCURRENCY: usize = 4;
/// Part size for multipart uploads (S3 requires at least 5 MiB but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;

impl S3BlobStore {
    pub fn new(config: S3Config) -> io::Result<Self> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout_disabled()
                    .with_read_timeout(config.timeout)
                    .with_connect_timeout(config.timeout.min(Duration::from_secs(5))),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: config.timeout,
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(to_io)?;
        Ok(Self { store: Arc::new(store), config })
    }

    fn key(&self, tail: &str) -> Path {
        if self.config.prefix.is_empty() {
            Path::from(tail)
        } else {
            Path::from(format!("{}/{tail}", self.config.prefix))
        }
    }

    fn blob_key(&self, digest: &Digest) -> Path {
        let hex = digest.hex();
        self.key(&format!("sha256/{}/{hex}", &hex[..2]))
    }

    fn staged_key(&self, upload_id: &str) -> Path {
        self.key(&format!("uploads/{upload_id}"))
    }

    /// Deletes an object; a missing one is not an error.
    async fn delete_key(&self, key: &Path) -> io::Result<()> {
        match self.store.delete(key).await {
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(to_io(e)),
        }
    }

    /// The URL a presigned POST goes to: the bucket, path-style on a custom
    /// endpoint, virtual-hosted on AWS.
    fn bucket_url(&self) -> String {
        match &self.config.endpoint {
            Some(endpoint) => format!("{endpoint}/{}", self.config.bucket),
            None => format!("https://{}.s3.{}.amazonaws.com", self.config.bucket, self.config.region),
        }
    }
}

fn to_io(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        other => io::Error::other(other.to_string()),
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    #[tracing::instrument(skip(self, file), fields(digest = %digest))]
    async fn put_file(&self, digest: &Digest, file: &FsPath) -> io::Result<()> {
        // A multipart upload becomes visible only when completed: all at once or not at all.
        let upload = self.store.put_multipart(&self.blob_key(digest)).await.map_err(to_io)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut source = tokio::fs::File::open(file).await?;
        let mut buffer = vec![0u8; 1024 * 1024];
        loop {
            let n = source.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            // Bounded memory: at most UPLOAD_CONCURRENCY parts in flight.
            writer.wait_for_capacity(UPLOAD_CONCURRENCY).await.map_err(to_io)?;
            writer.write(&buffer[..n]);
        }
        writer.finish().await.map_err(to_io)?;
        tokio::fs::remove_file(file).await
    }

    #[tracing::instrument(skip(self), fields(digest = %digest))]
    async fn open(&self, digest: &Digest, range: Option<BlobRange>) -> io::Result<BlobReader> {
        let options =
            GetOptions { range: range.map(|r| GetRange::Bounded(r.start..r.end + 1)), ..Default::default() };
        let result = self.store.get_opts(&self.blob_key(digest), options).await.map_err(to_io)?;
        Ok(BlobReader { body: result.into_stream().map(|chunk| chunk.map_err(to_io)).boxed() })
    }

    #[tracing::instrument(skip(self), fields(digest = %digest))]
    async fn delete(&self, digest: &Digest) -> io::Result<()> {
        self.delete_key(&self.blob_key(digest)).await
    }

    /// Writes and removes a probe object: proves the bucket exists and the
    /// credentials may put and delete in it.
    async fn ping(&self) -> io::Result<()> {
        let probe = self.key(".stackyard-ping");
        self.store.put(&probe, PutPayload::from_static(b"ok")).await.map_err(to_io)?;
        self.store.delete(&probe).await.map_err(to_io)
    }

    fn direct(&self) -> Option<&dyn DirectUploads> {
        Some(self)
    }
}

#[async_trait]
impl DirectUploads for S3BlobStore {
    fn presign_post(
        &self,
        upload_id: &str,
        min_size: u64,
        max_size: u64,
        expires_at: DateTime<Utc>,
    ) -> PresignedPost {
        let signer = PostSigner {
            region: &self.config.region,
            access_key_id: &self.config.access_key_id,
            secret_access_key: &self.config.secret_access_key,
        };
        let key = self.staged_key(upload_id).to_string();
        PresignedPost {
            url: self.bucket_url(),
            fields: signer.sign(&self.config.bucket, &key, min_size, max_size, expires_at, Utc::now()),
        }
    }

    async fn presign_put(&self, upload_id: &str, expires_in: Duration) -> io::Result<String> {
        let url = self.store.signed_url(http::Method::PUT, &self.staged_key(upload_id), expires_in).await;
        Ok(url.map_err(to_io)?.to_string())
    }

    async fn staged(&self, upload_id: &str) -> io::Result<Option<StagedObject>> {
        match self.store.head(&self.staged_key(upload_id)).await {
            Ok(meta) => Ok(Some(StagedObject { size: meta.size, last_modified: meta.last_modified })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(to_io(e)),
        }
    }

    async fn read_staged(&self, upload_id: &str) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        let result = self.store.get(&self.staged_key(upload_id)).await.map_err(to_io)?;
        Ok(result.into_stream().map(|chunk| chunk.map_err(to_io)).boxed())
    }

    async fn promote(&self, upload_id: &str, digest: &Digest) -> io::Result<()> {
        self.store.copy(&self.staged_key(upload_id), &self.blob_key(digest)).await.map_err(to_io)
    }

    async fn discard(&self, upload_id: &str) -> io::Result<()> {
        self.delete_key(&self.staged_key(upload_id)).await
    }

    async fn presign_get(&self, digest: &Digest, filename: &str, expires_in: Duration) -> io::Result<String> {
        let disposition = format!("attachment; filename=\"{filename}\"");
        let options = SignedUrlOptions::default().with_query([("response-content-disposition", disposition)]);
        let url =
            self.store.signed_url_opts(http::Method::GET, &self.blob_key(digest), expires_in, &options).await;
        Ok(url.map_err(to_io)?.to_string())
    }
}

/// Signs S3 POST policies with AWS Signature Version 4.
struct PostSigner<'a> {
    region: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

impl PostSigner<'_> {
    /// The form fields of a POST that may put one object at `key`, of
    /// `min..=max` bytes, until `expires_at`.
    fn sign(
        &self,
        bucket: &str,
        key: &str,
        min: u64,
        max: u64,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> std::collections::BTreeMap<String, String> {
        let date = now.format("%Y%m%d").to_string();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let credential = format!("{}/{date}/{}/s3/aws4_request", self.access_key_id, self.region);
        let policy = serde_json::json!({
            "expiration": expires_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "conditions": [
                {"bucket": bucket},
                {"key": key},
                ["content-length-range", min, max],
                {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
                {"x-amz-credential": credential},
                {"x-amz-date": amz_date},
            ],
        });
        let encoded = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
        let signing_key = ["s3", "aws4_request"].iter().fold(
            hmac(&hmac(format!("AWS4{}", self.secret_access_key).as_bytes(), &date), self.region),
            |key, part| hmac(&key, part),
        );
        let signature = hex::encode(hmac(&signing_key, &encoded));
        [
            ("key", key.to_string()),
            ("policy", encoded),
            ("x-amz-algorithm", "AWS4-HMAC-SHA256".to_string()),
            ("x-amz-credential", credential),
            ("x-amz-date", amz_date),
            ("x-amz-signature", signature),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The example of AWS's "Example: Browser-Based Upload using HTTP POST
    /// (Using AWS Signature Version 4)": its policy, key and signature.
    #[test]
    fn signs_post_policies_as_aws_documents() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let policy = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
        let signing_key = ["s3", "aws4_request"]
            .iter()
            .fold(hmac(&hmac(format!("AWS4{secret}").as_bytes(), "20151229"), "us-east-1"), |k, p| {
                hmac(&k, p)
            });
        assert_eq!(
            hex::encode(hmac(&signing_key, policy)),
            "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
        );
    }

    #[test]
    fn post_fields_carry_the_policy_they_sign() {
        let signer = PostSigner { region: "eu-west-1", access_key_id: "AKID", secret_access_key: "secret" };
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap();
        let fields = signer.sign("b", "p/uploads/u1", 1, 100, now + chrono::Duration::minutes(15), now);
        assert_eq!(fields["x-amz-credential"], "AKID/20261203/eu-west-1/s3/aws4_request");
        let policy: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD.decode(&fields["policy"]).unwrap(),
        )
        .unwrap();
        assert_eq!(policy["expiration"], "2026-12-03T10:15:00.000Z");
        assert_eq!(policy["conditions"][2], serde_json::json!(["content-length-range", 1, 100]));
        assert_eq!(policy["conditions"][1]["key"], "p/uploads/u1");
        assert_eq!(fields["x-amz-signature"].len(), 64);
    }
}

//! Payloads too large for a DynamoDB item (raw bodies, big rendered requests), kept in S3.

use crate::{AwsError, Service};
use bytes::Bytes;
use hub_core::ports::StoreError;

/// The bucket for large payloads; without one, a payload over the item limit is refused.
#[derive(Clone, Debug)]
pub struct Blobs {
    s3: Option<(aws_sdk_s3::Client, String)>,
}

impl Blobs {
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self { s3: Some((s3, bucket.into())) }
    }

    /// No bucket: only payloads that fit an item can be stored.
    pub fn none() -> Self {
        Self { s3: None }
    }

    fn bucket(&self) -> Result<&(aws_sdk_s3::Client, String), StoreError> {
        self.s3.as_ref().ok_or_else(|| {
            StoreError::Unavailable(
                "payload larger than a DynamoDB item and no bodies bucket is configured".into(),
            )
        })
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let (s3, bucket) = self.bucket()?;
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(data.into())
            .send()
            .await
            .map_err(|e| AwsError::call(Service::S3, "PutObject", &e))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let (s3, bucket) = self.bucket()?;
        let out = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| AwsError::call(Service::S3, "GetObject", &e))?;
        let data = out.body.collect().await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(data.into_bytes())
    }
}

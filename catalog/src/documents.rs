//! Uploaded documents: the adhesion agreements ("norma técnica de adhesión")
//! that both procedures rest on. Only PDF, recognised by its content (it must
//! start with `%PDF-`), at most [`MAX_DOCUMENT_BYTES`], stored with its
//! SHA-256.

use crate::domain::{optional_text, Actor, DomainError, DomainResult, Page, PageRequest};
use crate::model::now_unix;
use crate::store::Store;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Largest document accepted, in bytes (8 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 8 << 20;
/// The only kind of document there is so far.
pub const ADHESION_AGREEMENT: &str = "adhesion_agreement";

/// Why an upload was refused before anything was written.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The content is not a PDF.
    #[error("the document is not a PDF (its content does not start with `%PDF-`)")]
    NotPdf,
    /// The content is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("the document has more than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// Anything else (entity, kind, name, database).
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// A document's metadata (never its content).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Document {
    /// Row id.
    pub id: i64,
    /// Code of the entity it belongs to.
    pub entity: String,
    /// What it is: `adhesion_agreement`.
    pub kind: String,
    /// The name it was uploaded with.
    pub filename: String,
    /// `application/pdf`.
    pub media_type: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// The principal who uploaded it.
    pub uploaded_by: i64,
    /// Upload time (Unix seconds).
    pub created_at: i64,
    /// Owning entity's row id.
    #[serde(skip)]
    pub entity_id: i64,
}

/// Checks an upload's content: a PDF of allowed size.
pub fn check_pdf(content: &[u8]) -> Result<(), UploadError> {
    if content.len() > MAX_DOCUMENT_BYTES {
        return Err(UploadError::TooLarge);
    }
    if !content.starts_with(b"%PDF-") {
        return Err(UploadError::NotPdf);
    }
    Ok(())
}

const SELECT: &str =
    "SELECT d.id, e.code, d.kind, d.filename, d.media_type, d.size_bytes, d.sha256,
        d.uploaded_by, d.created_at, d.entity_id
     FROM documents d JOIN entities e ON e.id = d.entity_id";

fn document_of(r: &sqlx::any::AnyRow) -> DomainResult<Document> {
    Ok(Document {
        id: r.try_get(0)?,
        entity: r.try_get(1)?,
        kind: r.try_get(2)?,
        filename: r.try_get(3)?,
        media_type: r.try_get(4)?,
        size_bytes: r.try_get(5)?,
        sha256: r.try_get(6)?,
        uploaded_by: r.try_get(7)?,
        created_at: r.try_get(8)?,
        entity_id: r.try_get(9)?,
    })
}

impl Store {
    /// Stores a document of `entity` (operators, or that entity's own
    /// principals). The content is checked before anything is written.
    pub async fn upload_document(
        &self,
        actor: &Actor,
        entity: &str,
        kind: &str,
        filename: &str,
        content: &[u8],
    ) -> Result<Document, UploadError> {
        check_pdf(content)?;
        if kind != ADHESION_AGREEMENT {
            return Err(DomainError::field("kind", "must be `adhesion_agreement`").into());
        }
        let filename = optional_text("filename", filename, 200)?;
        let filename = if filename.is_empty() {
            "adhesion.pdf".to_string()
        } else {
            filename
        };
        let entity_id = self.entity_id_of(entity).await?;
        if !actor.may_act_for(entity_id) {
            return Err(DomainError::Forbidden(format!(
                "only an operator or entity `{entity}` itself may file its documents"
            ))
            .into());
        }
        let sha = crate::hex::hex(&Sha256::digest(content));
        let now = now_unix();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO documents (entity_id, kind, filename, media_type, size_bytes, sha256, content, uploaded_by, created_at)
             VALUES ($1, $2, $3, 'application/pdf', $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(entity_id)
        .bind(kind)
        .bind(&filename)
        .bind(content.len() as i64)
        .bind(&sha)
        .bind(STANDARD.encode(content))
        .bind(actor.principal_id)
        .bind(now)
        .fetch_one(self.pool())
        .await
        .map_err(DomainError::from)?;
        Ok(Document {
            id,
            entity: entity.to_string(),
            kind: kind.to_string(),
            filename,
            media_type: "application/pdf".into(),
            size_bytes: content.len() as i64,
            sha256: sha,
            uploaded_by: actor.principal_id,
            created_at: now,
            entity_id,
        })
    }

    /// A document's metadata, for operators and its entity.
    pub async fn document(&self, actor: &Actor, id: i64) -> DomainResult<Document> {
        let row = sqlx::query(&format!("{SELECT} WHERE d.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("document {id}")))?;
        let doc = document_of(&row)?;
        if !actor.may_act_for(doc.entity_id) {
            return Err(DomainError::Forbidden(format!(
                "document {id} belongs to another entity"
            )));
        }
        Ok(doc)
    }

    /// A document's content, for operators and its entity.
    pub async fn document_content(
        &self,
        actor: &Actor,
        id: i64,
    ) -> DomainResult<(Document, Vec<u8>)> {
        let doc = self.document(actor, id).await?;
        let text: String = sqlx::query_scalar("SELECT content FROM documents WHERE id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await?;
        let content = STANDARD
            .decode(text)
            .map_err(|e| DomainError::Db(sqlx::Error::Decode(Box::new(e))))?;
        Ok((doc, content))
    }

    /// Documents: operators see all (optionally of one entity), others their
    /// entity's.
    pub async fn list_documents(
        &self,
        actor: &Actor,
        entity: Option<&str>,
        page: PageRequest,
    ) -> DomainResult<Page<Document>> {
        let entity_id = match (actor.is_operator(), entity) {
            (true, None) => None,
            (true, Some(code)) => Some(self.entity_id_of(code).await?),
            (false, _) => actor.entity_id,
        };
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE d.id > $1 AND ($2 IS NULL OR d.entity_id = $3) ORDER BY d.id LIMIT $4"
        ))
        .bind(page.after_id)
        .bind(entity_id)
        .bind(entity_id)
        .bind(page.limit + 1)
        .fetch_all(self.pool())
        .await?;
        let items = rows
            .iter()
            .map(document_of)
            .collect::<DomainResult<Vec<_>>>()?;
        Ok(page.finish(items, |d| d.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pdf_content_of_allowed_size_passes() {
        assert!(check_pdf(b"%PDF-1.7\n...").is_ok());
        assert!(matches!(check_pdf(b"PK\x03\x04"), Err(UploadError::NotPdf)));
        assert!(matches!(check_pdf(b""), Err(UploadError::NotPdf)));
        let mut big = b"%PDF-".to_vec();
        big.resize(MAX_DOCUMENT_BYTES + 1, b'x');
        assert!(matches!(check_pdf(&big), Err(UploadError::TooLarge)));
    }
}

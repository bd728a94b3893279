//! The client half of the verified upload (see ARCHITECTURE.md): a temporary name,
//! the server's SHA-256 compared with ours, and a rename that never replaces a final name: one
//! `SITE COMMIT` on a logarchive server, SITE SHA256 + RNFR/RNTO elsewhere. The server half is
//! `server::site`.

use super::*;

impl Client {
    /// The agent's upload protocol: upload to a temporary name beside `remote` (resuming what an
    /// earlier attempt left there), compare the server's SHA-256 with ours, and only then rename
    /// to the final name. A final name that already holds the same bytes counts as done.
    pub async fn upload_verified<'a>(
        &mut self,
        local: impl Into<Local<'a>>,
        remote: &str,
        length: Option<u64>,
    ) -> Result<VerifiedUpload> {
        self.upload_verified_with(local, remote, length, None).await
    }

    /// [`Client::upload_verified`] with a SHA-256 state the caller kept from an earlier upload of the same file, so only the new bytes are read and hashed.
    pub async fn upload_verified_with<'a>(
        &mut self,
        local: impl Into<Local<'a>>,
        remote: &str,
        length: Option<u64>,
        progress: Option<Progress>,
    ) -> Result<VerifiedUpload> {
        Ok(self
            .verified_upload(local.into(), remote, length, progress, true)
            .await?
            .0)
    }

    /// [`Client::upload_verified`] for a file the caller knows to be new (the agent's state
    /// database says so): nothing is asked before the upload, and a logarchive server checks the
    /// final name when it commits (`SITE COMMIT`: one round trip for verify and rename). Also
    /// returns the hash state of what it sent (`None` when the final name already held the
    /// bytes), for a later [`Client::upload_hashed`] append.
    pub async fn upload_verified_hashed<'a>(
        &mut self,
        local: impl Into<Local<'a>>,
        remote: &str,
        length: Option<u64>,
    ) -> Result<(VerifiedUpload, Option<HashState>)> {
        self.verified_upload(local.into(), remote, length, None, false)
            .await
    }

    pub(super) async fn verified_upload(
        &mut self,
        local: Local<'_>,
        remote: &str,
        length: Option<u64>,
        progress: Option<Progress>,
        check_first: bool,
    ) -> Result<(VerifiedUpload, Option<HashState>)> {
        let remote = self.absolute(remote);
        let (dir, name) = split_remote(&remote);
        if name.is_empty() {
            return Err(ClientError::Invalid(format!("{remote} has no file name")));
        }
        let temp = join_remote(dir, &temp_name_for(name));
        // Never replace a final name, whatever the account may do: same bytes = done. A server
        // with SITE COMMIT checks that itself when the file is meant to be new.
        if check_first || self.commit == Some(false) {
            if let Some(done) = self.already_there(local, &remote, length).await? {
                return Ok((done, None));
            }
        }
        // Most uploads are fresh: STOR straight away (a round trip less than asking for the
        // temporary file's size first). If an earlier attempt left a temporary file, that STOR is
        // refused (an agent may not overwrite) and we resume it instead.
        let fresh = UploadOptions {
            mode: UploadMode::Create,
            length,
            progress: progress.clone(),
        };
        let (out, state) = match self.upload_hashed(local, &temp, fresh, None).await {
            Ok(done) => done,
            Err(ClientError::Permission(_)) => {
                let resume = UploadOptions {
                    mode: UploadMode::Resume,
                    length,
                    progress,
                };
                self.upload_hashed(local, &temp, resume, None).await?
            }
            Err(e) => return Err(e),
        };
        if self.commit != Some(false) {
            match self.commit(&temp, &remote, &out.sha256).await {
                Ok(already_present) => {
                    let done = VerifiedUpload {
                        bytes: out.bytes,
                        sha256: out.sha256,
                        size: out.size,
                        already_present,
                    };
                    return Ok((done, Some(state)));
                }
                Err(ClientError::Protocol {
                    code: 500..=504, ..
                }) => {
                    // Not a logarchive server: the same protocol in three commands.
                    self.commit = Some(false);
                    if let Some(done) = self.already_there(local, &remote, length).await? {
                        return Ok((done, None));
                    }
                }
                Err(e) if e.is_transient() => {
                    // The reply may have been lost after the rename: the final name tells.
                    if let Some(done) = self.already_there(local, &remote, length).await? {
                        let done = VerifiedUpload {
                            bytes: out.bytes,
                            ..done
                        };
                        return Ok((done, Some(state)));
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        let server = self.remote_sha256(&temp).await?;
        if server != out.sha256 {
            return Err(ClientError::HashMismatch {
                remote: temp,
                local: out.sha256,
                server,
            });
        }
        if let Err(e) = self.rename(&temp, &remote).await {
            // A retried RNTO after a lost reply, or a concurrent upload: the final may be ours.
            if let Some(done) = self.already_there(local, &remote, length).await? {
                let done = VerifiedUpload {
                    bytes: out.bytes,
                    ..done
                };
                return Ok((done, Some(state)));
            }
            return Err(e);
        }
        let done = VerifiedUpload {
            bytes: out.bytes,
            sha256: out.sha256,
            size: out.size,
            already_present: false,
        };
        Ok((done, Some(state)))
    }

    /// `SITE COMMIT temp final sha256`: the server renames the verified upload to its final name
    /// in one step. `Ok(true)`: the final name already held these bytes.
    pub(super) async fn commit(&mut self, temp: &str, fin: &str, sha256: &str) -> Result<bool> {
        let cmd = format!(
            "SITE COMMIT {} {} {sha256}",
            crate::site::encode(temp),
            crate::site::encode(fin)
        );
        let what = format!("SITE COMMIT {fin}");
        let r = self
            .run(&what, false, move |s| {
                let cmd = cmd.clone();
                Box::pin(async move {
                    s.custom_command(cmd, &[Status::RequestedFileActionOk])
                        .await
                })
            })
            .await;
        match r {
            Ok(reply) => {
                self.commit = Some(true);
                Ok(String::from_utf8_lossy(&reply.body).contains("Already present"))
            }
            Err(ClientError::Protocol { code: 553, text }) => {
                self.commit = Some(true);
                match text
                    .rsplit("Exists ")
                    .next()
                    .and_then(|n| n.trim().parse().ok())
                {
                    Some(size) => Err(ClientError::Exists {
                        remote: fin.to_string(),
                        size,
                    }),
                    None => Err(ClientError::Protocol { code: 553, text }),
                }
            }
            Err(ClientError::Protocol { code: 554, text }) => {
                self.commit = Some(true);
                Err(ClientError::HashMismatch {
                    remote: temp.to_string(),
                    local: sha256.to_string(),
                    server: text.rsplit(' ').next().unwrap_or_default().to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `Some` if `remote` exists with exactly the local bytes (the first `length` of them).
    pub(super) async fn already_there(
        &mut self,
        local: Local<'_>,
        remote: &str,
        length: Option<u64>,
    ) -> Result<Option<VerifiedUpload>> {
        let Some(entry) = self.stat(remote).await? else {
            return Ok(None);
        };
        if entry.kind != EntryKind::File {
            return Err(ClientError::Invalid(format!(
                "{remote} exists and is not a file"
            )));
        }
        let other = || ClientError::Exists {
            remote: remote.to_string(),
            size: entry.size,
        };
        // Sizes first: a final of another size is told without reading the local file at all.
        let local_len = local.len()?;
        if entry.size != length.unwrap_or(local_len).min(local_len) {
            return Err(other());
        }
        let (sha, size) = local_sha256(local, Some(entry.size)).await?;
        if self.remote_sha256(remote).await? != sha {
            return Err(other());
        }
        Ok(Some(VerifiedUpload {
            bytes: 0,
            sha256: sha,
            size,
            already_present: true,
        }))
    }
}

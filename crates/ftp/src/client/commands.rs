//! Commands on paths: the working folder, folders, metadata, listings, renames, and
//! logarchive's SITE SHA256 and SITE ALIAS.

use super::*;

impl Client {
    /// Absolute form of a remote path, from the working directory.
    pub fn absolute(&self, path: &str) -> String {
        paths::absolute(&self.cwd, path)
    }

    /// The working folder (PWD).
    pub async fn pwd(&mut self) -> Result<String> {
        self.run("PWD", true, |s| Box::pin(s.pwd())).await
    }

    /// Changes the working folder (CWD).
    pub async fn cwd(&mut self, path: &str) -> Result<()> {
        let p = self.absolute(path);
        self.on_path("CWD", &p, true, |s, q| {
            Box::pin(async move { s.cwd(&q).await })
        })
        .await?;
        self.cwd = p;
        Ok(())
    }

    /// Makes sure `/a/b/c` exists (creating the missing parts) and switches to it.
    pub async fn ensure_dir(&mut self, path: &str) -> Result<()> {
        let target = self.absolute(path);
        if self.cwd == target {
            return Ok(());
        }
        if self.cwd(&target).await.is_ok() {
            return Ok(());
        }
        let mut so_far = String::new();
        for part in target.split('/').filter(|p| !p.is_empty()) {
            so_far = format!("{so_far}/{part}");
            if self.is_dir(&so_far).await? {
                continue;
            }
            let made = self
                .on_path("MKD", &so_far, true, |s, q| {
                    Box::pin(async move { s.mkdir(&q).await })
                })
                .await;
            // Someone else may have made it meanwhile (or our retried MKD did): check again.
            if let Err(e) = made {
                if !self.is_dir(&so_far).await? {
                    return Err(e);
                }
            }
        }
        self.cwd(&target).await
    }

    pub(super) async fn is_dir(&mut self, path: &str) -> Result<bool> {
        Ok(matches!(
            self.stat(path).await?,
            Some(Entry {
                kind: EntryKind::Dir,
                ..
            })
        ))
    }

    /// MLST of one path; `None` if it does not exist.
    pub async fn stat(&mut self, path: &str) -> Result<Option<Entry>> {
        let p = self.absolute(path);
        let r = self
            .on_path("MLST", &p, true, |s, q| {
                Box::pin(async move { s.mlst(Some(&q)).await })
            })
            .await;
        match r {
            Ok(line) => Ok(paths::parse_entry(line.trim()).map(|mut e| {
                e.name = split_remote(&p).1.to_string();
                e
            })),
            Err(ClientError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a file or folder exists at `path`.
    pub async fn exists(&mut self, path: &str) -> Result<bool> {
        Ok(self.stat(path).await?.is_some())
    }

    /// The size of a file (SIZE).
    pub async fn size(&mut self, path: &str) -> Result<u64> {
        self.on_path("SIZE", path, true, |s, q| {
            Box::pin(async move { s.size(&q).await })
        })
        .await
        .map(|n| n as u64)
    }

    /// The modification time of a file (MDTM).
    pub async fn mtime(&mut self, path: &str) -> Result<SystemTime> {
        let t = self
            .on_path("MDTM", path, true, |s, q| {
                Box::pin(async move { s.mdtm(&q).await })
            })
            .await?;
        let secs = t.and_utc().timestamp();
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
    }

    /// Lists a folder: MLSD, or LIST where the server has no MLSD.
    pub async fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let lines = self
            .on_path("MLSD", path, true, |s, q| {
                Box::pin(async move { s.mlsd(Some(&q)).await })
            })
            .await;
        let (lines, mlsd) = match lines {
            Ok(l) => (l, true),
            Err(ClientError::Protocol {
                code: 500..=502, ..
            }) => {
                let l = self
                    .on_path("LIST", path, true, |s, q| {
                        Box::pin(async move { s.list(Some(&q)).await })
                    })
                    .await?;
                (l, false)
            }
            Err(e) => return Err(e),
        };
        let mut out: Vec<Entry> = lines
            .iter()
            .filter_map(|l| {
                if mlsd {
                    paths::parse_entry(l)
                } else {
                    paths::parse_list_line(l)
                }
            })
            .filter(|e| e.name != "." && e.name != "..")
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Makes one folder (MKD); the parent must exist (see `ensure_dir` for `mkdir -p`).
    pub async fn mkdir(&mut self, path: &str) -> Result<()> {
        self.on_path("MKD", path, false, |s, q| {
            Box::pin(async move { s.mkdir(&q).await })
        })
        .await
    }

    /// Renames a file or folder (RNFR + RNTO).
    pub async fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (self.absolute(from), self.absolute(to));
        let (f2, t2) = (f.clone(), t.clone());
        self.run(&format!("rename {f} to {t}"), false, move |s| {
            let (f, t) = (f2.clone(), t2.clone());
            Box::pin(async move { s.rename(&f, &t).await })
        })
        .await
    }

    /// Deletes a file (DELE).
    pub async fn delete(&mut self, path: &str) -> Result<()> {
        self.on_path("DELE", path, false, |s, q| {
            Box::pin(async move { s.rm(&q).await })
        })
        .await
    }

    /// Removes an empty folder (RMD).
    pub async fn rmdir(&mut self, path: &str) -> Result<()> {
        self.on_path("RMD", path, false, |s, q| {
            Box::pin(async move { s.rmdir(&q).await })
        })
        .await
    }

    /// The server's SHA-256 of a file (logarchive's `SITE SHA256`).
    pub async fn remote_sha256(&mut self, path: &str) -> Result<String> {
        let p = self.absolute(path);
        let cmd = format!("SITE SHA256 {p}");
        let what = cmd.clone();
        let r = self
            .run(&what, true, move |s| {
                let cmd = cmd.clone();
                Box::pin(async move { s.custom_command(cmd, &[Status::File]).await })
            })
            .await?;
        let text = String::from_utf8_lossy(&r.body);
        text.split_whitespace()
            .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|w| w.to_ascii_lowercase())
            .ok_or_else(|| ClientError::Protocol {
                code: 213,
                text: format!("no SHA-256 in {text:?}"),
            })
    }

    /// Tells the server that `remote` was also known as `name` where it came from (logarchive's
    /// `SITE ALIAS`). Servers without it answer 500-502: [`ClientError::Protocol`].
    pub async fn alias(&mut self, remote: &str, name: &str) -> Result<()> {
        let p = self.absolute(remote);
        let cmd = format!(
            "SITE ALIAS {} {}",
            crate::site::encode(&p),
            crate::site::encode(name)
        );
        let what = format!("SITE ALIAS {p}");
        self.run(&what, true, move |s| {
            let cmd = cmd.clone();
            Box::pin(async move { s.custom_command(cmd, &[Status::CommandOk]).await })
        })
        .await?;
        Ok(())
    }
}

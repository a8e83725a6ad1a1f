//! The silences API of the engine: list, add (within the configured caps) and expire.
//! API silences are persisted in the outbox; the engine task is told to re-evaluate.

use super::*;

impl AlertEngine {
    /// Every silence: config ones, then API ones (expired API silences included until the
    /// agent restarts).
    pub fn silences(&self) -> Vec<Silence> {
        let mut v = self.setup.load().silences.clone();
        v.extend(self.api_silences.lock().iter().cloned());
        v
    }

    /// Adds an API silence (persisted), within `[alerting]` `max_silences` and
    /// `max_silence_duration`. Ended API silences are forgotten (memory and outbox) once
    /// their number would reach the cap, so the list stays bounded.
    pub async fn add_silence(&self, s: Silence) -> Result<Silence, AddSilenceError> {
        let limits = self.setup.load().silence_limits;
        let span = s.ends_at.duration_since(s.starts_at).unwrap_or_default();
        if span > limits.max_duration {
            return Err(AddSilenceError::Limit(format!(
                "a silence may last at most {} (`[alerting] max_silence_duration`); this one lasts {}",
                crate::time::fmt_duration(limits.max_duration),
                crate::time::fmt_duration(span)
            )));
        }
        let now = SystemTime::now();
        let ended: Vec<String> = {
            let mut list = self.api_silences.lock();
            let mut ended = Vec::new();
            if list.len() >= limits.max_count {
                list.retain(|x| {
                    let keep = x.ends_at > now;
                    if !keep {
                        ended.push(x.id.clone());
                    }
                    keep
                });
            }
            if list.len() >= limits.max_count {
                return Err(AddSilenceError::Limit(format!(
                    "{} silences are pending or active, the most allowed (`[alerting] max_silences`); expire some first",
                    list.len()
                )));
            }
            // Reserved now, so concurrent requests cannot pass the cap together.
            list.push(s.clone());
            ended
        };
        if !ended.is_empty()
            && let Err(e) = self.outbox.prune_silences(&ended).await
        {
            tracing::warn!(error = %e, "cannot delete ended silences from the outbox");
        }
        if let Err(e) = self.outbox.save_silence(&s).await {
            self.api_silences.lock().retain(|x| x.id != s.id);
            return Err(AddSilenceError::Store(e.into()));
        }
        let _ = self.tx.try_send(Msg::Silences);
        Ok(s)
    }

    /// Expires an API silence now. `Ok(None)`: no such silence; `Err` for config ones.
    pub async fn expire_silence(&self, id: &str) -> Result<Option<Silence>, &'static str> {
        if self.setup.load().silences.iter().any(|s| s.id == id) {
            return Err(
                "silences from the config file cannot be expired over the API; edit [[silences]] and reload",
            );
        }
        let out = {
            let mut list = self.api_silences.lock();
            let Some(s) = list.iter_mut().find(|s| s.id == id) else {
                return Ok(None);
            };
            let now = SystemTime::now();
            if s.ends_at > now {
                s.ends_at = now.max(s.starts_at);
            }
            s.clone()
        };
        if let Err(e) = self.outbox.save_silence(&out).await {
            tracing::error!(error = %e, "cannot save the expired silence");
        }
        let _ = self.tx.try_send(Msg::Silences);
        Ok(Some(out))
    }
}

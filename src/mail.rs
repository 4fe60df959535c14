//! Outgoing mail (verification links): through SMTP when `[smtp]` is
//! configured (lettre, STARTTLS by default), else written as `.eml` files to
//! `provisioning.outbox_dir` (the embedded default, and the demo's).

use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, SmtpConfig, SmtpTls};

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("mail to {to} not sent: {reason}")]
pub struct MailError {
    /// Recipient.
    pub to: String,
    /// What failed.
    pub reason: String,
}

impl MailError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        "mail_failed"
    }
}

fn transport(s: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let builder = match s.tls {
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
            .map_err(|e| e.to_string())?,
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host).map_err(|e| e.to_string())?
        }
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
    };
    let mut builder = builder.port(s.port).timeout(Some(Duration::from_secs(15)));
    if let (Some(u), Some(p)) = (&s.username, &s.password) {
        builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
    }
    Ok(builder.build())
}

/// Sends (or writes) one plain-text message.
pub async fn send(
    cfg: &Config,
    to: &str,
    subject: &str,
    body: &str,
    file_stem: &str,
) -> Result<(), MailError> {
    let fail = |reason: String| MailError {
        to: to.to_owned(),
        reason,
    };
    match &cfg.smtp {
        Some(s) => {
            // 8bit when lettre accepts it (short lines), so the link stays
            // one readable line; else lettre's own choice (quoted-printable).
            let crlf = body.replace("\r\n", "\n").replace('\n', "\r\n");
            let encoded = Body::new_with_encoding(crlf, ContentTransferEncoding::EightBit)
                .unwrap_or_else(Body::new);
            let msg = Message::builder()
                .from(
                    s.from
                        .parse()
                        .map_err(|e| fail(format!("smtp.from: {e}")))?,
                )
                .to(to.parse().map_err(|e| fail(format!("recipient: {e}")))?)
                .subject(subject)
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(encoded),
                )
                .map_err(|e| fail(e.to_string()))?;
            let t = transport(s).map_err(fail)?;
            t.send(msg).await.map_err(|e| fail(e.to_string()))?;
            Ok(())
        }
        None => {
            let dir = &cfg.provisioning.outbox_dir;
            let text = format!(
                "To: {to}\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}",
                body.replace('\n', "\r\n")
            );
            std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(dir.join(format!("{file_stem}.eml")), text))
                .map_err(|e| fail(format!("outbox {}: {e}", dir.display())))
        }
    }
}

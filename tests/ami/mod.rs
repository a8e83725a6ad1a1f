//! `ami` check against the transcript-faithful fake Asterisk Manager Interface.

mod check;
mod codec_corpus;
mod transcript;

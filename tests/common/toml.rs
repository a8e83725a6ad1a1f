//! TOML snippets that many test configs share, so each test spells out only what is
//! particular to it.

/// `[agent]` with `data_dir = "{dir}/data"` (the temp dir [`super::TestAgent`] fills in),
/// then `rest`.
pub fn agent_toml(rest: &str) -> String {
    format!("[agent]\ndata_dir = \"{{dir}}/data\"\n{rest}")
}

/// A `[[checks]]` table for a tcp check `name` on `address`, then the `extra` lines (each
/// ending in a newline).
pub fn tcp_check(name: &str, address: impl std::fmt::Display, extra: &str) -> String {
    format!("[[checks]]\nname = \"{name}\"\nkind = \"tcp\"\naddress = \"{address}\"\n{extra}")
}

/// A `[[checks]]` table for a session-mode websocket check `name` on `url`, then the
/// `extra` lines (each ending in a newline).
pub fn ws_session_check(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"websocket\"\nmode = \"session\"\nurl = \"{url}\"\n{extra}"
    )
}

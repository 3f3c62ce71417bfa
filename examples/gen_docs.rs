//! Writes the man pages and shell completions that the Debian package ships, from the
//! binaries' own clap definitions and from the commented example config, so none of them is
//! written by hand:
//!
//! - `OUT/man1/dualsealctl.1` and one `dualsealctl-SUBCOMMAND.1` per subcommand,
//!   `OUT/man8/dualseald.8` (and its subcommands), `OUT/man5/dualseal.toml.5`;
//! - `OUT/completions/{bash,zsh,fish}/...` for both binaries.
//!
//! usage: cargo run --example gen_docs -- OUT (scripts/package.sh and scripts/test.sh run it)

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

#[allow(dead_code, unused_imports)]
mod ctl {
    include!("../src/bin/dualsealctl/cli.rs");
}

#[allow(dead_code, unused_imports)]
mod daemon {
    include!("../src/bin/dualseald/cli.rs");
}

/// The commented example config the `dualseal.toml(5)` page is made from.
const EXAMPLE: &str = include_str!("../config/dualseal.example.toml");

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: gen_docs OUT_DIR")?;
    let pages = man_pages(ctl::Args::command(), "1", &out)?
        + man_pages(daemon::Args::command(), "8", &out)?;
    let man5 = out.join("man5");
    std::fs::create_dir_all(&man5).with_context(|| format!("create {}", man5.display()))?;
    let config_page = man5.join("dualseal.toml.5");
    std::fs::write(&config_page, config_man_page(EXAMPLE)?)
        .with_context(|| format!("write {}", config_page.display()))?;
    let mut completions = 0;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let dir = out.join("completions").join(shell.to_string());
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        for mut cmd in [ctl::Args::command(), daemon::Args::command()] {
            let name = cmd.get_name().to_string();
            clap_complete::generate_to(shell, &mut cmd, name, &dir)
                .with_context(|| format!("{shell} completion into {}", dir.display()))?;
            completions += 1;
        }
    }
    println!(
        "{}: {} man pages, {completions} completion scripts",
        out.display(),
        pages + 1
    );
    Ok(())
}

/// One page for `cmd` and one per visible subcommand (`dualsealctl-start.1`) in
/// `OUT/manSECTION`, as `clap_mangen::generate_to` does but in the given section. Returns how
/// many it wrote.
fn man_pages(cmd: clap::Command, section: &str, out: &Path) -> Result<usize> {
    fn write(cmd: clap::Command, section: &str, dir: &Path) -> Result<usize> {
        let mut n = 0;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            n += write(sub, section, dir)?;
        }
        let page = clap_mangen::Man::new(cmd)
            .section(section)
            .manual("dualseal")
            .source(format!("dualseal {}", env!("CARGO_PKG_VERSION")));
        let path = dir.join(page.get_filename());
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        page.render(&mut file)
            .and_then(|()| file.flush())
            .with_context(|| format!("write {}", path.display()))?;
        Ok(n + 1)
    }
    let dir = out.join(format!("man{section}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write(cmd, section, &dir)
}

/// `dualseal.toml(5)`: the example's comments become the text, each `key = value` (or
/// `# key = value`, a setting left at its default) a tagged paragraph under its table.
fn config_man_page(example: &str) -> Result<String> {
    let mut page = String::new();
    let _ = writeln!(
        page,
        ".TH DUALSEAL.TOML 5 \"\" \"dualseal {}\" \"dualseal\"",
        env!("CARGO_PKG_VERSION")
    );
    page.push_str(".SH NAME\ndualseal.toml \\- configuration of dualseald\n");
    page.push_str(".SH SYNOPSIS\n/etc/dualseal/dualseal.toml\n");
    page.push_str(".SH DESCRIPTION\n");
    let mut comment: Vec<String> = Vec::new();
    let mut table: Option<String> = None;
    let mut seen = std::collections::BTreeSet::new();
    let mut keys = 0;
    // Whether the last thing written was a key, so indented `#` lines continue its text.
    let mut after_key = false;
    let flush = |page: &mut String, comment: &mut Vec<String>| {
        if !comment.is_empty() {
            let _ = writeln!(page, ".PP\n{}", roff(&comment.join(" ")));
            comment.clear();
        }
    };
    let lines: Vec<&str> = example.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            // A comment standing before a blank line and a table introduces that table.
            let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
            if table.is_none() || next.is_none_or(|l| table_name(l.trim_start()).is_none()) {
                flush(&mut page, &mut comment);
            }
            after_key = false;
            continue;
        }
        if let Some(name) = table_name(trimmed) {
            let repeat = !seen.insert(format!("[{name}]"));
            if !repeat {
                let header = if trimmed.starts_with("[[") {
                    format!("[[{name}]]")
                } else {
                    format!("[{name}]")
                };
                let _ = writeln!(page, ".SH \"{header}\"");
            }
            flush(&mut page, &mut comment);
            table = Some(name);
            after_key = false;
            continue;
        }
        let (setting, text) = split_setting(trimmed);
        if let Some((key, value)) = setting {
            let Some(t) = &table else {
                bail!("config example: {key:?} comes before the first [table]");
            };
            if seen.insert(format!("{t}.{key}")) {
                let _ = writeln!(page, ".TP\n\\fB{}\\fR = {}", roff(&key), roff(&value));
                if let Some(t) = text {
                    comment.push(t);
                }
                let _ = writeln!(page, "{}", roff(&comment.join(" ")));
                keys += 1;
            }
            comment.clear();
            after_key = true;
            continue;
        }
        if let Some(text) = text {
            if text.is_empty() {
                // A bare `#` line: a paragraph break.
                flush(&mut page, &mut comment);
                after_key = false;
            } else if after_key && line.starts_with(' ') {
                // An inline comment continued on the next line, under the key's own.
                let _ = writeln!(page, "{}", roff(&text));
            } else {
                after_key = false;
                comment.push(text);
            }
        }
    }
    flush(&mut page, &mut comment);
    page.push_str(".SH FILES\n/etc/dualseal/dualseal.toml, /etc/dualseal/INSTANCE.toml (dualseald@INSTANCE.service)\n");
    page.push_str(".SH SEE ALSO\n\\fBdualseald\\fR(8), \\fBdualsealctl\\fR(1)\n");
    if keys < 20 {
        bail!("config example: only {keys} settings found; is the parser out of step with it?");
    }
    Ok(page)
}

/// `aws` for `[aws]`, `category` for `[[category]]`.
fn table_name(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?.trim_start_matches('[');
    let end = inner.find(']')?;
    let name = &inner[..end];
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then(|| name.to_string())
}

/// A line as (`key`, `value`) when it sets a key (also when commented out: `# key = value`),
/// and its comment text.
fn split_setting(line: &str) -> (Option<(String, String)>, Option<String>) {
    let commented = line.starts_with('#');
    let body = line.trim_start_matches('#').trim_start();
    if let Some((key, rest)) = body.split_once('=') {
        let key = key.trim();
        let is_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if is_key {
            let (value, comment) = split_inline_comment(rest.trim());
            return (Some((key.to_string(), value)), comment);
        }
    }
    if commented {
        (None, Some(body.to_string()))
    } else {
        (None, None)
    }
}

/// `"db"   # text` as (`"db"`, `text`): a `#` outside quotes starts a comment.
fn split_inline_comment(rest: &str) -> (String, Option<String>) {
    let mut quoted = false;
    for (i, c) in rest.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => {
                return (
                    rest[..i].trim().to_string(),
                    Some(rest[i + 1..].trim().to_string()),
                )
            }
            _ => {}
        }
    }
    (rest.to_string(), None)
}

/// Text made safe for roff: backslashes escaped, no line starting with a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

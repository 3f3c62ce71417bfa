// dualseald's command line. `include!`d by dualseald.rs and by examples/gen_docs.rs, which
// renders dualseald(8) and the shell completions from these definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dualseald",
    version,
    about = "dualseal daemon: migrates a master S3 bucket into per-category buckets, sealed twice"
)]
pub(crate) struct Args {
    /// Config file.
    #[arg(
        long,
        short,
        env = "DUALSEAL_CONFIG",
        default_value = "/etc/dualseal/dualseal.toml",
        global = true
    )]
    config: PathBuf,
    /// Open a journal that is behind its high-water mark (an older copy restored on purpose).
    #[arg(long, global = true)]
    accept_journal_rollback: bool,
    /// This daemon's share I/N of the source when several split one bucket, overriding
    /// `daemon.shard` (each shard needs its own journal).
    #[arg(long, env = "DUALSEAL_SHARD", global = true)]
    shard: Option<String>,
    /// This daemon's 0-based ordinal among --shard-count shards, as Kubernetes numbers a
    /// StatefulSet's pods (the pod-index label, through the downward API): ordinal I runs
    /// share I+1 of N. Instead of --shard.
    #[arg(
        long,
        env = "DUALSEAL_SHARD_ORDINAL",
        global = true,
        requires = "shard_count",
        conflicts_with = "shard"
    )]
    shard_ordinal: Option<String>,
    /// The number of shards, with --shard-ordinal (a StatefulSet's replicas).
    #[arg(
        long,
        env = "DUALSEAL_SHARD_COUNT",
        global = true,
        requires = "shard_ordinal"
    )]
    shard_count: Option<String>,
    /// Log format, overriding `daemon.log_format`: text or json.
    #[arg(long, env = "DUALSEAL_LOG_FORMAT", global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (the default).
    Run,
    /// Check the config file and report every problem; touches no AWS service.
    Validate,
    /// Rebuild a lost or damaged journal from the destination buckets' metadata. The old
    /// journal directory is moved aside, never deleted. Run with the daemon stopped.
    RebuildJournal,
}

//! The command line: every command, flag and `--help` text (clap's derive). `cairn man`
//! and `cairn completions` are generated from these definitions.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

pub const ABOUT: &str = "Cairn versions data and models together with code.

Data lives in a content-addressed cache; small pointer files (`PATH.cairn`) go into Git.";

pub const EXIT_CODES: &str = "Exit codes: 0 success, 1 command failed, 2 usage error, 255 internal error.";

/// `cairn --version`: the version, the commit it was built from and the build date.
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("CAIRN_COMMIT"), " ", env!("CAIRN_BUILD_DATE"), ")");

#[derive(Parser)]
#[command(name = "cairn", version = VERSION, about = ABOUT, after_help = EXIT_CODES)]
pub struct Cli {
    /// Run as if started in DIR.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub directory: Option<PathBuf>,
    /// No progress bars or warnings on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start using Cairn in the current Git work tree.
    #[command(after_help = "Example:\n  git init && cairn init")]
    Init,
    /// Track files or directories: store them in the cache and write PATH.cairn pointers.
    #[command(
        after_help = "Examples:\n  cairn add data/raw\n  cairn add model.onnx data/labels.csv\n  git add data/raw.cairn data/.gitignore && git commit -m 'raw data v1'"
    )]
    Add {
        /// Files or directories to track.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Follow symbolic links that lead out of the repository and store what they point
        /// to (refused by default: `push` would upload files from outside the repository).
        #[arg(long)]
        follow_external_symlinks: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Record changes to already-tracked data (all of it, or PATH).
    #[command(after_help = "Examples:\n  cairn commit\n  cairn commit data/raw")]
    Commit {
        /// Only this tracked path (default: every tracked path).
        path: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show tracked data that differs from its pointer.
    #[command(after_help = "Examples:\n  cairn status\n  cairn status data/raw --json")]
    Status {
        /// Only this tracked path, or a path inside a tracked directory.
        path: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Make the work tree match the pointers (for example after `git checkout`).
    #[command(
        after_help = "Examples:\n  git checkout v1 && cairn checkout\n  cairn checkout data/raw --force"
    )]
    Checkout {
        /// Only this tracked path, or a path inside a tracked directory.
        path: Option<PathBuf>,
        /// Overwrite changes that are not in the cache.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Files added, modified or deleted between Git revisions or against the work tree.
    #[command(
        after_help = "Examples:\n  cairn diff              # HEAD against the work tree\n  cairn diff v1           # v1 against the work tree\n  cairn diff v1 v2 --json"
    )]
    Diff {
        /// The old revision (default HEAD).
        old: Option<String>,
        /// The new revision (default: the work tree).
        new: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List tracked files with their sizes.
    #[command(after_help = "Examples:\n  cairn ls\n  cairn ls data/raw --rev v1 --json")]
    Ls {
        /// Only files at or below this path.
        path: Option<PathBuf>,
        /// List as of this Git revision.
        #[arg(long)]
        rev: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write a tracked file's bytes to stdout, at any revision.
    #[command(
        after_help = "Examples:\n  cairn cat data/labels.csv\n  cairn cat data/raw/part-0001.csv --rev v1 | head"
    )]
    Cat {
        /// A tracked file, or a file inside a tracked directory.
        path: PathBuf,
        /// Read it as of this Git revision (default: the work tree's pointers).
        #[arg(long)]
        rev: Option<String>,
    },
    /// Stop tracking a path; its data stays in place as ordinary files.
    #[command(after_help = "Example:\n  cairn rm data/scratch && git rm --cached data/scratch.cairn")]
    Rm {
        /// Tracked paths (as given to `cairn add`).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Make linked (read-only) tracked files editable copies again.
    #[command(
        after_help = "Example:\n  cairn unprotect data/labels.csv && $EDITOR data/labels.csv && cairn commit data/labels.csv"
    )]
    Unprotect {
        /// Tracked files or directories, or paths inside tracked directories.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Manage remotes: where `push`, `fetch` and `pull` send and get data.
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Upload the data of tracked paths that the remote lacks.
    #[command(
        after_help = "Examples:\n  cairn push\n  cairn push data/raw -r backup --jobs 16\n  cairn push --all-branches --json"
    )]
    Push(TransferArgs),
    /// Download the data of tracked paths into the cache (the work tree is not changed).
    #[command(after_help = "Examples:\n  cairn fetch\n  cairn fetch --rev v1 --rev v2")]
    Fetch(TransferArgs),
    /// Fetch, then check out: make the work tree match the pointers with data from a remote.
    #[command(after_help = "Examples:\n  git pull && cairn pull\n  cairn pull data/raw -r origin")]
    Pull(PullArgs),
    /// Remove cache objects no pointer references (a dry run unless --force).
    #[command(
        after_help = "Examples:\n  cairn gc                       # what would be freed\n  cairn gc --all-commits --force\n  cairn gc --cloud -r origin     # what would be removed from the remote"
    )]
    Gc {
        /// Clean the remote instead of the local cache: remove what no branch, tag or the
        /// work tree references.
        #[arg(long)]
        cloud: bool,
        /// The remote, with --cloud.
        #[arg(short, long, requires = "cloud")]
        remote: Option<String>,
        /// Also keep objects referenced by any commit of any branch or tag (not only their
        /// tips).
        #[arg(long)]
        all_commits: bool,
        /// Keep only what the work tree, pipeline outputs, the run cache and experiments
        /// reference: the data of other branches and tags is removed (local cache only).
        #[arg(long, conflicts_with_all = ["all_commits", "cloud"])]
        workspace: bool,
        /// Delete the objects.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Verify every cache object's hash and every pointer's objects.
    #[command(
        after_help = "Examples:\n  cairn fsck\n  cairn fsck --json | jq .problems\n\nExits 1 if any problem is found."
    )]
    Fsck {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run the pipeline in cairn.yaml: only stale stages run, in parallel; stages whose
    /// fingerprint ran before are restored from the run cache.
    #[command(
        after_help = "Examples:\n  cairn run                 # every stale stage\n  cairn run train --dry     # what would happen, and why\n  cairn run -j 4 --keep-going\n\nStage output is printed with a [stage] prefix; full logs are in .cairn/state/logs/."
    )]
    Run(RunArgs),
    /// Say why a stage would run (which dep, param or command changed) or be restored.
    #[command(after_help = "Examples:\n  cairn explain train\n  cairn explain 'train@lr-0.1' --json")]
    Explain {
        /// The stage (a foreach or matrix base name explains every stage it generates).
        stage: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Compare the params the pipeline reads.
    #[command(subcommand)]
    Params(ParamsCommand),
    /// Show and compare metrics files declared by the pipeline.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// The chain from an output back to raw data and code: digests, stages, params, commit.
    #[command(after_help = "Examples:\n  cairn lineage model.onnx\n  cairn lineage data/features --json")]
    Lineage {
        path: PathBuf,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Experiments: recorded runs.
    #[command(subcommand)]
    Exp(ExpCommand),
    /// Partitioned stages: per-partition state, and dynamic partition keys.
    #[command(subcommand)]
    Partitions(PartitionsCommand),
    /// Pipeline tools.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// The model registry: immutable versions, aliases with history, approvals and policies.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Charts of runs' metric series.
    #[command(subcommand)]
    Plots(PlotsCommand),
    /// Users and service accounts of a team server (`cairn server --auth`).
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens: what the `mlflow` client and scripts authenticate with.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Every write the servers took: who, from where, what, when (append-only).
    #[command(
        after_help = "Examples:\n  cairn audit --since 1d\n  cairn audit --user alice --object churn --json"
    )]
    Audit {
        /// Only writes this recent: 30m, 2h, 7d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only this user's writes.
        #[arg(long)]
        user: Option<String>,
        /// Only writes whose object (a run, experiment, model, version or artifact) contains this.
        #[arg(long)]
        object: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The web UI for this repository: pipeline graph, runs, lineage, registry, monitoring.
    #[command(
        after_help = "Examples:\n  cairn ui                 # http://127.0.0.1:4000\n  cairn ui --port 0        # a free port, printed on stdout\n\nOn loopback the UI acts as you (approve, move aliases); `cairn server` mounts the same UI read-only."
    )]
    Ui {
        /// Address to listen on (loopback by default; another address makes the UI read-only
        /// and needs --insecure-no-auth).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on; 0 picks a free one.
        #[arg(long, default_value_t = 4000)]
        port: u16,
        /// Listen on an address other machines can reach, without authentication.
        #[arg(long)]
        insecure_no_auth: bool,
    },
    /// Serve the MLflow-compatible tracking API, the artifact proxy and the web UI (loopback by default).
    #[command(
        after_help = "Examples:\n  cairn server                      # http://127.0.0.1:5000\n  cairn server --port 0             # a free port, printed on stdout\n  MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python train.py"
    )]
    Server {
        /// Address to listen on; an address other machines can reach (0.0.0.0) needs --auth
        /// (or --insecure-no-auth).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on; 0 picks a free one.
        #[arg(long, default_value_t = 5000)]
        port: u16,
        /// Largest artifact a client may upload (`16GiB`, `500MB`, bytes).
        #[arg(long, value_name = "SIZE", default_value = "16GiB", value_parser = cairn_units::parse_size)]
        max_artifact_size: u64,
        /// Most bytes of artifacts one run may hold.
        #[arg(long, value_name = "SIZE", default_value = "64GiB", value_parser = cairn_units::parse_size)]
        run_quota: u64,
        /// Require an API token on every request but `GET /health` (create users and tokens
        /// first: `cairn user add`, `cairn token create`).
        #[arg(long)]
        auth: bool,
        /// Listen on an address other machines can reach without --auth (anyone who can
        /// connect can then read and change everything).
        #[arg(long)]
        insecure_no_auth: bool,
    },
    /// Serve registered models over HTTP: native JSON, KServe v2 and MLflow scoring.
    #[command(
        after_help = "Models are served by alias (followed live, with its rollout), by version, or by name (the latest).\n\nExamples:\n  cairn serve churn@production                # http://127.0.0.1:8080, gRPC on 8081\n  cairn serve churn@production fraud@3 --port 0   # free ports, printed on stdout\n  cairn serve churn@production --batch-max 64 --batch-wait-ms 2\n  curl -s localhost:8080/models/churn/predict \\\n      -d '{\"inputs\": {\"age\": 42, \"tenure\": 3, \"plan\": \"pro\"}}'"
    )]
    Serve(ServeArgs),
    /// A served model's inputs and outputs, profiled from its prediction log, and their drift against the training data.
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        after_help = "Drift is measured against the profile recorded by `cairn model register --training-data`: K-S / chi-squared (p < 0.05) for references of up to 1,000 rows, normed Wasserstein / Jensen-Shannon (>= 0.1) above; the dataset drifts when half its features do (per-model settings: `drift:` in monitor.yaml).\n\nExamples:\n  cairn monitor churn --since 1h\n  cairn monitor churn --version 3 --html drift.html\n  cairn monitor churn --window 1h                    # live accuracy per hour, from POST /feedback labels\n  cairn monitor requests churn --feature plan        # requests with a plan the training data never had\n  cairn monitor requests churn --alert 0193a1b2c3d4  # the requests behind an alert\n  cairn monitor export churn --since 1d --with-labels --out data/production"
    )]
    Monitor {
        #[command(subcommand)]
        action: Option<MonitorCommand>,
        /// The registered model's name.
        #[arg(required = true)]
        model: Option<String>,
        #[command(flatten)]
        select: MonitorSelect,
        /// Also write an HTML report with reference and current histograms per feature.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Live quality per window of this length (e.g. 1h), besides the total.
        #[arg(long, value_name = "DURATION")]
        window: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Alerts opened by the rules in monitor.yaml (`cairn serve` evaluates them continuously).
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Rules live in monitor.yaml at the repository's root:\n\n  evaluate_every: 30s\n  webhooks: [{url: https://hooks.example.com/ml}]\n  models:\n    churn:\n      rules:\n        - {name: drifted, metric: drift_share, op: \">=\", threshold: 0.5, window: 5m, for: 1m}\n        - {name: errors, metric: error_rate, op: \">\", threshold: 0.05, window: 5m}\n        - {name: accuracy, metric: accuracy, op: \"<\", threshold: 0.8, window: 1d, min_rows: 100}\n\nMetrics: requests, rows, error_rate, latency_p50/p90/p95/p99 (ms), drift_share, drifted_features, drift.FEATURE, drifted.FEATURE, missing_rate[.FEATURE], type_error_rate[.FEATURE], mean.FEATURE, accuracy, precision, recall, mae, rmse.\n\nExamples:\n  cairn alerts                 # open alerts\n  cairn alerts --all --json\n  cairn alerts show 0193a1b2\n  cairn alerts check           # evaluate every rule once now"
    )]
    Alerts {
        #[command(subcommand)]
        action: Option<AlertsCommand>,
        /// Resolved alerts too.
        #[arg(long)]
        all: bool,
        /// Only this model's.
        #[arg(long)]
        model: Option<String>,
        /// Where predictions are logged (default: .cairn/predictions).
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show a logged prediction and walk it back: model version, run, params, metrics, data, commit.
    #[command(
        after_help = "Examples:\n  cairn trace 01JD5Q4W3CT2V9XK7N8M6P0R1S\n  cairn trace 01JD5Q4W3CT2V9XK7N8M6P0R1S --json"
    )]
    Trace {
        /// The trace id (the x-cairn-trace-id response header).
        id: String,
        /// Where predictions were logged (default: .cairn/predictions).
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// When it is not there, look in the segments servers shipped to this remote.
        #[arg(long, value_name = "REMOTE")]
        remote: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Get or set configuration (project `.cairn/config`, or the user's with --user).
    #[command(after_help = config_help())]
    Config {
        /// A key such as `cache.link`.
        key: Option<String>,
        /// The new value; without it, print the current one.
        value: Option<String>,
        /// Use the user-level file ($XDG_CONFIG_HOME/cairn/config.toml).
        #[arg(long)]
        user: bool,
        /// Remove KEY.
        #[arg(long, requires = "key")]
        unset: bool,
        /// Show every key set in the file.
        #[arg(long, conflicts_with_all = ["key", "unset"])]
        list: bool,
    },
    /// Print a shell completion script for bash, zsh, fish or PowerShell.
    #[command(
        after_help = "Examples:\n  cairn completions bash > ~/.local/share/bash-completion/completions/cairn\n  cairn completions zsh > ~/.zfunc/_cairn\n  cairn completions fish > ~/.config/fish/completions/cairn.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from the same definitions as `--help`.
    #[command(
        after_help = "Examples:\n  cairn man > cairn.1 && man ./cairn.1\n  cairn man | gzip > /usr/local/share/man/man1/cairn.1.gz"
    )]
    Man,
}

/// `cairn config --help`: every key with its meaning and default, from the one list the
/// library validates against.
pub fn config_help() -> String {
    let mut text = String::from("Keys:\n");
    for (name, help, default) in cairn_repo::config::keys() {
        text.push_str(&format!("  {name}\n      {help} (default: {default})\n"));
    }
    text.push_str(
        "  remote.NAME.OPTION\n      a remote's options: see `cairn remote modify --help`\n\nExamples:\n  cairn config cache.link hardlink,copy\n  cairn config --user core.jobs 8\n  cairn config meta.url postgres://cairn@db.internal/cairn\n  cairn config --list",
    );
    text
}

#[derive(Subcommand)]
pub enum ExpCommand {
    /// Recorded runs (every `cairn run`), newest first, with their params and metrics.
    #[command(
        after_help = "Examples:\n  cairn exp show\n  cairn exp show --sort -accuracy -n 5\n  cairn exp show --csv > runs.csv"
    )]
    Show {
        /// At most this many runs.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
        /// Sort by a metric or param (`-KEY` for descending).
        #[arg(long, allow_hyphen_values = true)]
        sort: Option<String>,
        /// Only runs matching an MLflow-style filter:
        /// `metrics.acc > 0.9 and params.lr = '0.01'` (keys as shown in the table).
        #[arg(long, value_name = "FILTER")]
        filter: Option<String>,
        /// Only these param and metric columns (comma-separated; `train.*` matches a prefix).
        #[arg(long, value_name = "KEYS", value_delimiter = ',')]
        columns: Vec<String>,
        /// CSV on stdout.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run the pipeline with overridden params in an isolated copy of the workspace (no
    /// commit; your work tree is untouched), reusing the run cache.
    #[command(
        after_help = "Examples:\n  cairn exp run -S train.lr=0.01\n  cairn exp run -S train.lr=0.001,0.01,0.1 -S train.depth=range(3,8) --queue\n  cairn exp run --run-all --jobs 4\n  cairn exp run -S config.toml:model.layers=4"
    )]
    Run {
        /// Override a param: `KEY=VALUE` (in params.yaml) or `FILE:KEY=VALUE`; `a,b,c` or
        /// `range(start,stop[,step])` sweep it (several -S make a grid).
        #[arg(short = 'S', long = "set-param", value_name = "[FILE:]KEY=VALUE")]
        set: Vec<String>,
        /// Only queue the experiments (run them later with --run-all).
        #[arg(long, conflicts_with = "run_all")]
        queue: bool,
        /// Run every queued experiment.
        #[arg(long)]
        run_all: bool,
        /// Experiments to run at once.
        #[arg(short, long, default_value_t = 1)]
        jobs: usize,
        /// A name for the experiment (one experiment only).
        #[arg(short, long)]
        name: Option<String>,
        /// Let -S add keys the params file does not have yet (otherwise a typo is an error).
        #[arg(long)]
        add: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Bring an experiment's params, lock and outputs into the work tree.
    #[command(after_help = "Example:\n  cairn exp apply 1492 && git commit -am 'lr 0.01'")]
    Apply {
        /// The experiment: its run id (or its first characters, at least 4) or its name.
        id: String,
    },
    /// Create a Git branch with an experiment's params and lock, on the commit it started from.
    #[command(after_help = "Example:\n  cairn exp branch 1492 lr-0.01 && git checkout lr-0.01 && cairn run")]
    Branch {
        id: String,
        /// The new branch's name.
        name: String,
    },
    /// Remove experiments (their records and workspaces).
    #[command(after_help = "Examples:\n  cairn exp remove 1492 d30c\n  cairn exp remove --queued")]
    Remove {
        ids: Vec<String>,
        /// Every queued experiment.
        #[arg(long)]
        queued: bool,
    },
    /// Share experiments (records, params files, lock and outputs) through a remote.
    #[command(after_help = "Examples:\n  cairn exp push origin\n  cairn exp push origin 1492")]
    Push {
        remote: String,
        /// Only these experiments (default: every one that has run).
        ids: Vec<String>,
    },
    /// Fetch the experiments a remote holds that this clone lacks.
    #[command(after_help = "Example:\n  cairn exp pull origin && cairn exp show")]
    Pull { remote: String },
    /// Params and metrics that differ between two recorded runs.
    #[command(
        after_help = "Examples:\n  cairn exp diff 14921add d30c797e\n  cairn exp diff 1492 d30c --all --json"
    )]
    Diff {
        /// A run: its id (or its first characters, at least 4) or its name.
        a: String,
        /// Another run, by id or name.
        b: String,
        /// Show equal values too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Register a version of a model: an .onnx file, or a directory with cairn-model.yaml.
    #[command(
        after_help = "Examples:\n  cairn model register churn models/churn.onnx\n  cairn model register churn models/churn/ --run 1492 --description 'more data'"
    )]
    Register {
        name: String,
        path: PathBuf,
        /// The run that produced it (default: the recorded run that wrote this content).
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
        /// Profile this training data (CSV, TSV or Parquet) with the version, for drift monitoring.
        #[arg(long, value_name = "FILE")]
        training_data: Option<PathBuf>,
        /// What the columns of a one-tensor model's input are, in order (`age,tenure,plan`);
        /// default: the training data's columns, when their number matches.
        #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
        feature_names: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Registered models with their latest version and aliases.
    #[command(after_help = "Examples:\n  cairn model list\n  cairn model list --json")]
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Every version of a model.
    #[command(after_help = "Examples:\n  cairn model versions churn\n  cairn model versions churn --json")]
    Versions {
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// One version: signature, lineage, aliases, approvals (`NAME`, `NAME@3`, `NAME@production`).
    #[command(
        after_help = "Examples:\n  cairn model show churn@production\n  cairn model show churn@3 --json"
    )]
    Show {
        reference: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Point an alias at a version (checked against its policy); also how to roll back.
    #[command(
        after_help = "Examples:\n  cairn model alias churn@3 production --reason 'beats v2 on recall'\n  cairn model alias churn@2 production --reason rollback"
    )]
    Alias {
        /// `NAME@VERSION` (or `NAME@OTHER_ALIAS`).
        reference: String,
        alias: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Remove an alias.
    #[command(after_help = "Example:\n  cairn model unalias churn staging --reason 'experiment over'")]
    Unalias {
        name: String,
        alias: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Every move of a model's aliases: who, when, why.
    #[command(
        after_help = "Examples:\n  cairn model history churn\n  cairn model history churn production --json"
    )]
    History {
        name: String,
        alias: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Approve a version.
    #[command(
        after_help = "Example:\n  cairn model approve churn@3 --comment 'validated on the March holdout'"
    )]
    Approve {
        reference: String,
        #[arg(long)]
        comment: String,
    },
    /// Show or set what an alias requires before it may point at a version.
    #[command(
        after_help = "Examples:\n  cairn model policy churn production --approvals 1 --require 'accuracy >= 0.9'\n  cairn model policy churn production --clear"
    )]
    Policy {
        name: String,
        alias: String,
        /// Approvals the version needs.
        #[arg(long)]
        approvals: Option<i64>,
        /// A condition on the version's recorded metrics (repeatable), e.g. `accuracy >= 0.9`.
        #[arg(long, value_name = "METRIC OP NUMBER")]
        require: Vec<String>,
        /// Whether the model may be deleted while this alias points at a version (by
        /// default a protected alias protects its model from deletion).
        #[arg(long, value_name = "true|false")]
        allow_delete: Option<bool>,
        /// Remove the policy.
        #[arg(long, conflicts_with_all = ["approvals", "require", "allow_delete"])]
        clear: bool,
    },
    /// Show or change how an alias's traffic is shared: a canary version with a weight, shadows.
    #[command(
        after_help = "A running `cairn serve` follows changes within a second. Promote the canary with `cairn model alias NAME@V ALIAS`; roll back with --clear.\n\nExamples:\n  cairn model rollout churn@production --canary 4 --weight 10\n  cairn model rollout churn@production --shadow 5\n  cairn model rollout churn@production --clear"
    )]
    Rollout {
        /// `NAME@ALIAS`.
        target: String,
        /// A version that answers --weight percent of the alias's requests (must meet the alias's policy).
        #[arg(long, value_name = "VERSION")]
        canary: Option<i64>,
        /// The canary's share of requests, in percent (default 10).
        #[arg(long, value_name = "PERCENT")]
        weight: Option<i64>,
        /// A version that gets a copy of every request; its answers are logged, never returned (repeatable).
        #[arg(long, value_name = "VERSION")]
        shadow: Vec<i64>,
        /// Remove the canary and the shadows: the alias's version takes all traffic.
        #[arg(long, conflicts_with_all = ["canary", "weight", "shadow"])]
        clear: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user or a service account; the first admin is created this way (there is no default one).
    #[command(
        after_help = "Examples:\n  cairn user add alice --admin\n  cairn user add nightly-training --service"
    )]
    Add {
        name: String,
        /// May manage users and tokens.
        #[arg(long)]
        admin: bool,
        /// An account for a program (a pipeline, a server), not a person.
        #[arg(long)]
        service: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List users.
    #[command(
        after_help = "Examples:\n  cairn user list\n  cairn user list --json | jq -r '.[] | select(.admin) | .name'"
    )]
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Remove a user and every token of theirs.
    #[command(after_help = "Examples:\n  cairn user remove nightly-training")]
    Remove { name: String },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token for a user; it is shown once (only its hash is kept).
    #[command(
        after_help = "Examples:\n  cairn token create laptop --user alice --expires 90d\n  export MLFLOW_TRACKING_TOKEN=$(cairn token create ci --user nightly-training -q)"
    )]
    Create {
        /// What the token is for (`laptop`, `ci`).
        name: String,
        #[arg(long)]
        user: String,
        /// How long it is valid: 30d, 12h (default: until revoked).
        #[arg(long, value_name = "DURATION")]
        expires: Option<cairn_units::Duration>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List tokens (never their secrets).
    #[command(after_help = "Examples:\n  cairn token list\n  cairn token list --user alice --json")]
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke a token: it authenticates nobody from now on.
    #[command(
        after_help = "Examples:\n  cairn token revoke 3f9a1c0e7b2d4a65      # the id from `cairn token list`"
    )]
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum PlotsCommand {
    /// Write an HTML file with an SVG chart per metric (one line per run) and print a summary.
    #[command(
        after_help = "Examples:\n  cairn plots show                  # the latest run with metrics\n  cairn plots show 1492 d30c -m loss -o loss.html"
    )]
    Show {
        /// Runs to compare, by id (or its first characters) or name (default: the latest run with metrics).
        runs: Vec<String>,
        /// Only these metrics (repeatable).
        #[arg(short, long = "metric", value_name = "KEY")]
        metrics: Vec<String>,
        /// Where to write the HTML (default: .cairn/plots/index.html).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct MonitorSelect {
    /// Only this version (default: every version in the log).
    #[arg(long)]
    pub version: Option<i64>,
    /// Only predictions this recent: 30m, 2h, 7d.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Where predictions were logged (default: .cairn/predictions).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
}

impl MonitorSelect {
    /// The selection of `model`'s predictions, paths relative to `cwd`.
    pub fn resolve(self, model: String, cwd: &Path) -> cairn_app::reports::Selection {
        cairn_app::reports::Selection {
            model,
            version: self.version,
            since: self.since,
            log_dir: self.log_dir.map(|d| cwd.join(d)),
        }
    }
}

#[derive(Subcommand)]
pub enum MonitorCommand {
    /// The logged requests behind a drifted feature (values the training data never had) or an alert.
    #[command(
        after_help = "Examples:\n  cairn monitor requests churn --feature tenure\n  cairn monitor requests churn --alert 3f2a --json"
    )]
    Requests {
        model: String,
        /// Requests whose FEATURE lies outside what the training data had.
        #[arg(long, value_name = "FEATURE", required_unless_present = "alert", conflicts_with = "alert")]
        feature: Option<String>,
        /// The requests behind this alert (see `cairn alerts`).
        #[arg(long, value_name = "ID")]
        alert: Option<String>,
        #[command(flatten)]
        select: MonitorSelect,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write logged inputs (and true labels) as a CSV or Parquet dataset and `cairn add` it, for retraining.
    #[command(
        after_help = "Columns: trace_id, time_ms, version, one per input, and label (with --with-labels; empty where none arrived).\n\nExamples:\n  cairn monitor export churn --since 7d --out data/production   # data/production/production.parquet\n  cairn monitor export churn --labelled-only --out data/feedback.csv\n  cairn monitor export churn --drifted-only --out data/drifted.parquet"
    )]
    Export {
        model: String,
        /// A .csv or .parquet file, or a directory (it gets production.parquet, or .csv with --format csv).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// csv or parquet (default: from --out's extension, else parquet).
        #[arg(long)]
        format: Option<String>,
        /// Only requests with a drifted feature outside what the training data had.
        #[arg(long)]
        drifted_only: bool,
        /// Add the true labels sent to POST /feedback (a `label` column).
        #[arg(long)]
        with_labels: bool,
        /// Only requests with a true label (implies --with-labels).
        #[arg(long)]
        labelled_only: bool,
        #[command(flatten)]
        select: MonitorSelect,
    },
}

#[derive(Subcommand)]
pub enum AlertsCommand {
    /// One alert: its window, value, the requests behind it, deliveries and actions.
    #[command(after_help = "Examples:\n  cairn alerts show 3f2a\n  cairn alerts show 3f2a --json")]
    Show {
        /// The alert id (or a unique prefix).
        id: String,
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Evaluate every rule in monitor.yaml once now; record, deliver and act on what changed.
    #[command(
        after_help = "Examples:\n  cairn alerts check\n  cairn alerts check --config staging-monitor.yaml"
    )]
    Check {
        /// Rules from this file instead of monitor.yaml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Args)]
pub struct OutputArgs {
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

// ---- pipelines ----

#[derive(Args)]
pub struct RunArgs {
    /// Stages to run, with everything they depend on (default: all). A foreach or matrix
    /// stage's name selects every stage it generates.
    #[arg(value_name = "STAGE")]
    pub stages: Vec<String>,
    /// Print the plan — which stages would run, be restored or are fresh, and why — and run
    /// nothing.
    #[arg(long)]
    pub dry: bool,
    /// Commands to run at once (default: the number of CPUs).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// After a failure, keep running stages that do not depend on it.
    #[arg(short, long)]
    pub keep_going: bool,
    /// Run the named stages (or all) even if they are fresh or in the run cache.
    #[arg(short, long)]
    pub force: bool,
    /// Partitioned stages: run this partition (repeatable; `2026-01-05`, or `2026-01-05|us`
    /// with several dimensions).
    #[arg(long, value_name = "KEY")]
    pub partition: Vec<String>,
    /// Partitioned stages: run a range of partitions (backfill): `A..B`, or `DIM=A..B` for
    /// one dimension.
    #[arg(long, value_name = "RANGE")]
    pub partitions: Vec<String>,
    /// Record into this existing (queued) run instead of a new one: how `cairn exp run` runs
    /// an experiment's workspace.
    #[arg(long, hide = true, value_name = "RUN_ID")]
    pub record_as: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Subcommand)]
pub enum ParamsCommand {
    /// Params read by the pipeline's stages that differ between a revision and the work tree.
    #[command(after_help = "Examples:\n  cairn params diff\n  cairn params diff v1 --json")]
    Diff {
        /// The revision to compare with (default HEAD).
        rev: Option<String>,
        /// Show every param, changed or not.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Subcommand)]
pub enum MetricsCommand {
    /// The metrics files the stages declare (JSON, YAML, TOML, CSV), flattened.
    #[command(after_help = "Examples:\n  cairn metrics show\n  cairn metrics show --json")]
    Show {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Metrics that differ between a revision and the work tree, with the change.
    #[command(after_help = "Examples:\n  cairn metrics diff\n  cairn metrics diff v1 --json")]
    Diff {
        /// The revision to compare with (default HEAD).
        rev: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Subcommand)]
pub enum PipelineCommand {
    /// Print the JSON Schema of cairn.yaml (for editors: `# yaml-language-server: $schema=...`).
    #[command(after_help = "Example:\n  cairn pipeline schema > docs/cairn.schema.json")]
    Schema,
}

#[derive(Subcommand)]
pub enum PartitionsCommand {
    /// Every partition of a stage: fresh, stale, or never materialized.
    #[command(
        after_help = "Examples:\n  cairn partitions list ingest\n  cairn partitions list ingest --state missing\n  cairn partitions list ingest --json | jq .summary"
    )]
    List {
        stage: String,
        /// Only partitions in this state (fresh, stale, missing).
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Add keys to a stage's dynamic partition dimension.
    #[command(
        after_help = "Example:\n  cairn partitions add per_customer acme globex\n  git add .cairn/partitions"
    )]
    Add {
        stage: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Remove keys from a stage's dynamic partition dimension (their outputs go at the next run).
    #[command(after_help = "Example:\n  cairn partitions remove ingest customer-42 customer-43")]
    Remove {
        stage: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

// ---- remotes ----

#[derive(Subcommand)]
pub enum RemoteCommand {
    /// Add a remote: a directory (local disk, NFS) or s3://BUCKET/PREFIX.
    #[command(
        after_help = "Examples:\n  cairn remote add origin s3://ml-data/churn --default\n  cairn remote add minio s3://bucket/proj -o endpoint=http://127.0.0.1:9000\n  cairn remote add nas /mnt/nas/cairn"
    )]
    Add {
        name: String,
        url: String,
        /// Make it the default remote (`core.remote`).
        #[arg(short, long)]
        default: bool,
        /// Remote options as KEY=VALUE (see `cairn remote modify --help`).
        #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
        /// Write to the user config instead of the project's.
        #[arg(long)]
        user: bool,
    },
    /// List remotes with their URLs.
    #[command(after_help = "Examples:\n  cairn remote list\n  cairn remote list --json")]
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Remove a remote from the config (its data stays where it is).
    #[command(after_help = "Example:\n  cairn remote remove old-nas")]
    Remove {
        name: String,
        #[arg(long)]
        user: bool,
    },
    /// Show or set the default remote.
    #[command(after_help = "Examples:\n  cairn remote default\n  cairn remote default origin")]
    Default {
        name: Option<String>,
        #[arg(long)]
        user: bool,
    },
    /// Set or unset an option of a remote.
    #[command(after_help = remote_options_help())]
    Modify {
        name: String,
        /// `url` or an option name.
        key: String,
        value: Option<String>,
        #[arg(long, conflicts_with = "value")]
        unset: bool,
        /// Write to the user config (for credentials: it is not committed to Git).
        #[arg(long)]
        user: bool,
    },
}

pub fn remote_options_help() -> String {
    let mut text = String::from("Options:\n  url                  the remote's location\n");
    for (key, help) in cairn_remote::OPTIONS {
        text.push_str(&format!("  {key:<20} {help}\n"));
    }
    text.push_str(
        "\nCredentials come from remote options, then AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /\nAWS_SESSION_TOKEN, then the profile (AWS_PROFILE or `profile`) in ~/.aws/credentials.\n\nExample:\n  cairn remote modify --user origin access-key-id AKIA...",
    );
    text
}

/// Which pointers a transfer covers, and how.
#[derive(Args)]
pub struct TransferArgs {
    /// Only these tracked paths (default: all of them).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The remote (default: `core.remote`, or the only one).
    #[arg(short, long)]
    pub remote: Option<String>,
    /// Also the pointers of this Git revision (repeatable).
    #[arg(long, value_name = "REV")]
    pub rev: Vec<String>,
    /// Also the pointers at the tip of every local branch.
    #[arg(long, short = 'a')]
    pub all_branches: bool,
    /// Also the pointers at every tag.
    #[arg(long, short = 'T')]
    pub all_tags: bool,
    /// Also the pointers of every commit reachable from any branch or tag.
    #[arg(long, short = 'A')]
    pub all_commits: bool,
    /// Concurrent transfers (default: the remote's `jobs` option, else 8).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args)]
pub struct PullArgs {
    /// Only these tracked paths (default: all of them).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The remote (default: `core.remote`, or the only one).
    #[arg(short, long)]
    pub remote: Option<String>,
    /// Concurrent transfers.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Overwrite work-tree changes that are not in the cache.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

// ---- serving ----

/// `cairn serve`'s flags.
#[derive(Args)]
pub struct ServeArgs {
    /// Models to serve: `NAME@ALIAS`, `NAME@VERSION` or `NAME`.
    #[arg(value_name = "MODEL")]
    pub targets: Vec<String>,
    /// Address to listen on; an address other machines can reach (0.0.0.0) needs
    /// --insecure-no-auth (the model server does not authenticate clients yet).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (printed on stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Listen on an address other machines can reach, without authentication.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Port for the Open Inference Protocol over gRPC; 0 picks a free one (printed on stdout).
    /// Default: 8081, or a free one with --port 0.
    #[arg(long, value_name = "PORT")]
    pub grpc_port: Option<u16>,
    /// ONNX Runtime's shared library (default: $CAIRN_ONNXRUNTIME, else the onnxruntime wheel in the active or the project's .venv).
    #[arg(long, value_name = "PATH")]
    pub onnxruntime: Option<PathBuf>,
    /// Sessions per model version (0: one per core); for MLflow models, Python worker processes.
    #[arg(long, default_value_t = 0)]
    pub sessions: usize,
    /// How an MLflow model's Python environment is made: `virtualenv` builds one per distinct requirements.txt (cached), `local` uses --python as it is.
    #[arg(long, value_name = "MANAGER", default_value = "virtualenv", value_parser = ["virtualenv", "local"])]
    pub env_manager: String,
    /// The Python interpreter for MLflow models: the base of their environments, or with --env-manager local the one they run in (default: $CAIRN_PYTHON, else python3).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Batch concurrent requests, up to this many rows (off by default).
    #[arg(long, value_name = "ROWS")]
    pub batch_max: Option<usize>,
    /// The longest a batch waits for more requests (only while more are arriving).
    #[arg(long, value_name = "MS", default_value_t = 2)]
    pub batch_wait_ms: u64,
    /// The largest request body accepted.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub max_body: usize,
    /// Take null (and \"NaN\") in float inputs as missing values (NaN) instead of refusing them.
    #[arg(long)]
    pub allow_nan: bool,
    /// Do not log predictions (nor profile them).
    #[arg(long)]
    pub no_log: bool,
    /// Log predictions but do not keep per-minute profiles of them for monitoring.
    #[arg(long)]
    pub no_profile: bool,
    /// Where predictions are logged (default: .cairn/predictions).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Also copy each sealed log segment to this remote (`<url>/predictions-v1/`).
    #[arg(long, value_name = "REMOTE")]
    pub log_remote: Option<String>,
    /// Close a log segment at this size.
    #[arg(long, value_name = "MB", default_value_t = 64)]
    pub log_segment_mb: u64,
    /// ... or at this age.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub log_segment_secs: u64,
    /// Monitoring rules from this file instead of monitor.yaml (see `cairn alerts --help`).
    #[arg(long, value_name = "FILE")]
    pub monitor: Option<PathBuf>,
    /// Do not evaluate monitoring rules (profiles are still kept).
    #[arg(long)]
    pub no_alerts: bool,
}

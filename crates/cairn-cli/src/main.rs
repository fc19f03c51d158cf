//! `cairn`: version data and models with code.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod alerts;
mod env;
mod exp;
mod failure;
mod model;
mod monitor;
mod output;
mod pipelines;
mod plots;
mod progress;
mod remotes;
mod runs;
mod serve;
mod tracking;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cairn_repo::config::ConfigFile;
use cairn_repo::{InitOutcome, OpenOptions, Repo, Reporter, Side, display_bytes};
use clap::{Args, Parser, Subcommand};

use failure::{EXIT_INTERNAL, Failure};
use output::{json, out};
use progress::{Progress, human_bytes};

const ABOUT: &str = "Cairn versions data and models together with code.

Data lives in a content-addressed cache; small pointer files (`PATH.cairn`) go into Git.";

const EXIT_CODES: &str = "Exit codes: 0 success, 1 command failed, 2 usage error, 255 internal error.";

/// `cairn --version`: the version, the commit it was built from and the build date.
const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("CAIRN_COMMIT"), " ", env!("CAIRN_BUILD_DATE"), ")");

#[derive(Parser)]
#[command(name = "cairn", version = VERSION, about = ABOUT, after_help = EXIT_CODES)]
struct Cli {
    /// Run as if started in DIR.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    directory: Option<PathBuf>,
    /// No progress bars or warnings on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    Remote(remotes::RemoteCommand),
    /// Upload the data of tracked paths that the remote lacks.
    #[command(
        after_help = "Examples:\n  cairn push\n  cairn push data/raw -r backup --jobs 16\n  cairn push --all-branches --json"
    )]
    Push(remotes::TransferArgs),
    /// Download the data of tracked paths into the cache (the work tree is not changed).
    #[command(after_help = "Examples:\n  cairn fetch\n  cairn fetch --rev v1 --rev v2")]
    Fetch(remotes::TransferArgs),
    /// Fetch, then check out: make the work tree match the pointers with data from a remote.
    #[command(after_help = "Examples:\n  git pull && cairn pull\n  cairn pull data/raw -r origin")]
    Pull(remotes::PullArgs),
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
    Run(pipelines::RunArgs),
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
    Params(pipelines::ParamsCommand),
    /// Show and compare metrics files declared by the pipeline.
    #[command(subcommand)]
    Metrics(pipelines::MetricsCommand),
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
    Partitions(pipelines::PartitionsCommand),
    /// Pipeline tools.
    #[command(subcommand)]
    Pipeline(pipelines::PipelineCommand),
    /// The model registry: immutable versions, aliases with history, approvals and policies.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Charts of runs' metric series.
    #[command(subcommand)]
    Plots(PlotsCommand),
    /// Serve the MLflow-compatible tracking API and artifact proxy (loopback by default).
    #[command(
        after_help = "Examples:\n  cairn server                      # http://127.0.0.1:5000\n  cairn server --port 0             # a free port, printed on stdout\n  MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python train.py"
    )]
    Server {
        /// Address to listen on; 0.0.0.0 serves other machines (there is no authentication).
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
    },
    /// Serve registered models over HTTP: native JSON, KServe v2 and MLflow scoring.
    #[command(
        after_help = "Models are served by alias (followed live, with its rollout), by version, or by name (the latest).\n\nExamples:\n  cairn serve churn@production                # http://127.0.0.1:8080, gRPC on 8081\n  cairn serve churn@production fraud@3 --port 0   # free ports, printed on stdout\n  cairn serve churn@production --batch-max 64 --batch-wait-ms 2\n  curl -s localhost:8080/models/churn/predict \\\n      -d '{\"inputs\": {\"age\": 42, \"tenure\": 3, \"plan\": \"pro\"}}'"
    )]
    Serve {
        /// Models to serve: `NAME@ALIAS`, `NAME@VERSION` or `NAME`.
        #[arg(value_name = "MODEL")]
        targets: Vec<String>,
        /// Address to listen on; 0.0.0.0 serves other machines (there is no authentication).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on; 0 picks a free one (printed on stdout).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port for the Open Inference Protocol over gRPC; 0 picks a free one (printed on stdout).
        /// Default: 8081, or a free one with --port 0.
        #[arg(long, value_name = "PORT")]
        grpc_port: Option<u16>,
        /// ONNX Runtime's shared library (default: $CAIRN_ONNXRUNTIME, else the onnxruntime wheel in the active or the project's .venv).
        #[arg(long, value_name = "PATH")]
        onnxruntime: Option<PathBuf>,
        /// Sessions per model version (0: one per core); for MLflow models, Python worker processes.
        #[arg(long, default_value_t = 0)]
        sessions: usize,
        /// How an MLflow model's Python environment is made: `virtualenv` builds one per distinct requirements.txt (cached), `local` uses --python as it is.
        #[arg(long, value_name = "MANAGER", default_value = "virtualenv", value_parser = ["virtualenv", "local"])]
        env_manager: String,
        /// The Python interpreter for MLflow models: the base of their environments, or with --env-manager local the one they run in (default: $CAIRN_PYTHON, else python3).
        #[arg(long, value_name = "PATH")]
        python: Option<PathBuf>,
        /// Batch concurrent requests, up to this many rows (off by default).
        #[arg(long, value_name = "ROWS")]
        batch_max: Option<usize>,
        /// The longest a batch waits for more requests (only while more are arriving).
        #[arg(long, value_name = "MS", default_value_t = 2)]
        batch_wait_ms: u64,
        /// The largest request body accepted.
        #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
        max_body: usize,
        /// Take null (and \"NaN\") in float inputs as missing values (NaN) instead of refusing them.
        #[arg(long)]
        allow_nan: bool,
        /// Do not log predictions (nor profile them).
        #[arg(long)]
        no_log: bool,
        /// Log predictions but do not keep per-minute profiles of them for monitoring.
        #[arg(long)]
        no_profile: bool,
        /// Where predictions are logged (default: .cairn/predictions).
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// Also copy each sealed log segment to this remote (`<url>/predictions-v1/`).
        #[arg(long, value_name = "REMOTE")]
        log_remote: Option<String>,
        /// Close a log segment at this size.
        #[arg(long, value_name = "MB", default_value_t = 64)]
        log_segment_mb: u64,
        /// ... or at this age.
        #[arg(long, value_name = "SECONDS", default_value_t = 600)]
        log_segment_secs: u64,
        /// Monitoring rules from this file instead of monitor.yaml (see `cairn alerts --help`).
        #[arg(long, value_name = "FILE")]
        monitor: Option<PathBuf>,
        /// Do not evaluate monitoring rules (profiles are still kept).
        #[arg(long)]
        no_alerts: bool,
    },
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

/// Writes generated text to stdout; a reader that stopped early (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    match std::io::Write::write_all(&mut std::io::stdout(), bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::user(format!("cannot write to stdout: {e}"), None))
        }
        _ => Ok(()),
    }
}

/// `cairn config --help`: every key with its meaning and default, from the one list the
/// library validates against.
fn config_help() -> String {
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
enum ExpCommand {
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
enum ModelCommand {
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
enum PlotsCommand {
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
struct MonitorSelect {
    /// Only this version (default: every version in the log).
    #[arg(long)]
    version: Option<i64>,
    /// Only predictions this recent: 30m, 2h, 7d.
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// Where predictions were logged (default: .cairn/predictions).
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
}

impl MonitorSelect {
    /// The selection of `model`'s predictions, paths relative to `cwd`.
    fn resolve(self, model: String, cwd: &Path) -> monitor::Selection {
        monitor::Selection {
            model,
            version: self.version,
            since: self.since,
            log_dir: self.log_dir.map(|d| cwd.join(d)),
        }
    }
}

#[derive(Subcommand)]
enum MonitorCommand {
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
enum AlertsCommand {
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
struct OutputArgs {
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // `cairn __supervise USAGE-FILE PROGRAM ARGS...`: how `cairn run` measures a stage's
    // commands (not a user command).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "__supervise") {
        return supervise(&args[2..]);
    }
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error in cairn (this is a bug; please report it): {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { failure::EXIT_USAGE } else { 0 });
        }
    };
    let reporter = Progress::new(cli.quiet);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli, &reporter))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => {
            reporter.finish();
            eprintln!("error: {}", failure.message);
            if let Some(hint) = failure.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(failure.code)
        }
        Err(_) => ExitCode::from(EXIT_INTERNAL),
    }
}

/// Runs a program, waits for it, writes `CPU-ms PEAK-RSS-KiB` of everything it ran to the
/// usage file, and ends the way the program ended (same exit code, or same signal).
fn supervise(args: &[std::ffi::OsString]) -> ExitCode {
    let [usage_file, program, rest @ ..] = args else {
        eprintln!("error: usage: cairn __supervise USAGE-FILE PROGRAM [ARGS...]");
        return ExitCode::from(failure::EXIT_USAGE);
    };
    // Ctrl-C and `cairn run` stopping the process group must not take the supervisor down
    // before the command: it waits, so the command is reaped (not left a zombie) and
    // measured. Caught signals are reset to their defaults in the command.
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, stopped.clone());
    }
    // If `cairn run` dies, even by SIGKILL, the kernel sends this supervisor SIGTERM; it
    // then stops the whole process group it leads (the command and everything it started),
    // so no stage outlives its run to race the next one.
    let parent = nix::unistd::getppid();
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let orphaned = move || nix::unistd::getppid() != parent;
    if orphaned() {
        return ExitCode::from(128 + 15);
    }
    let mut child = match std::process::Command::new(program).args(rest).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("error: cannot run `{}`: {e}", program.to_string_lossy());
            return ExitCode::from(127);
        }
    };
    // The wait runs on its own thread so the command's exit is seen at once, while this
    // one watches for the parent's death.
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let status = loop {
        match exit.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(Ok(status)) => break status,
            Ok(Err(e)) => {
                eprintln!("error: lost track of `{}`: {e}", program.to_string_lossy());
                return ExitCode::from(1);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return ExitCode::from(1),
        }
        if stopped.load(std::sync::atomic::Ordering::Relaxed) && orphaned() {
            stop_own_group(&exit);
        }
    };
    if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) {
        let ms = |t: nix::sys::time::TimeVal| t.tv_sec() * 1000 + t.tv_usec() / 1000;
        let cpu_ms = ms(usage.user_time()) + ms(usage.system_time());
        let _ = std::fs::write(usage_file, format!("{cpu_ms} {}\n", usage.max_rss()));
    }
    // A command killed by a signal is reported the shell's way: 128 + the signal.
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// The supervisor's parent is gone: SIGTERM to its process group, SIGKILL after a grace
/// period. The group includes the supervisor, which is why it ignores the SIGTERM itself.
fn stop_own_group<T>(exit: &std::sync::mpsc::Receiver<T>) -> ! {
    use nix::sys::signal::{Signal, killpg};
    let group = nix::unistd::getpgrp();
    let _ = killpg(group, Signal::SIGTERM);
    let _ = exit.recv_timeout(std::time::Duration::from_secs(3));
    // Whatever else the command started in its group goes too, and this process with it.
    let _ = killpg(group, Signal::SIGKILL);
    std::process::exit(128 + 15)
}

fn user_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("cairn/config.toml"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config/cairn/config.toml"))
}

struct Context {
    cwd: PathBuf,
}

/// The user config's path, after making sure no one else can read it: it may hold a
/// remote's credentials. A file others could read is tightened to mode 600, with a warning.
fn private_user_config() -> Option<PathBuf> {
    let path = user_config_path()?;
    match cairn_repo::config::make_private(&path) {
        Ok(Some(mode)) => eprintln!(
            "warning: `{}` was readable by others (mode {mode:o}); it may hold credentials, so it is now mode 600",
            path.display()
        ),
        Ok(None) => {}
        Err(e) => eprintln!("warning: could not make `{}` private: {e}", path.display()),
    }
    Some(path)
}

impl Context {
    fn open(&self) -> Result<Repo, Failure> {
        Ok(Repo::open(&self.cwd, &OpenOptions { user_config: private_user_config() })?)
    }

    /// The repository with what the library needs from this process's surroundings.
    fn workspace(&self) -> Result<cairn_app::Workspace, Failure> {
        Ok(cairn_app::Workspace::new(self.open()?, Box::new(env::Cli)))
    }

    /// The user's config file (`--user`) or the project's.
    fn config_file(&self, user: bool) -> Result<ConfigFile, Failure> {
        let path = if user {
            private_user_config().ok_or_else(|| {
                Failure::user("cannot locate the user config: neither XDG_CONFIG_HOME nor HOME is set", None)
            })?
        } else {
            self.open()?.project_config_path()
        };
        Ok(ConfigFile::load(&path)?)
    }

    fn rel(&self, repo: &Repo, path: &Path) -> Result<Vec<u8>, Failure> {
        Ok(repo.rel_path(&self.cwd.join(path))?)
    }
}

fn run(cli: Cli, reporter: &Progress) -> Result<(), Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::user(format!("cannot read the current directory: {e}"), None))?;
    let cwd = match &cli.directory {
        Some(dir) => cwd.join(dir),
        None => cwd,
    };
    let context = Context { cwd };
    match cli.command {
        Command::Init => {
            let outcome = Repo::init(&context.cwd)?;
            let repo = context.open()?;
            match outcome {
                InitOutcome::Created => out(format!(
                    "Initialized Cairn in {}\nCommit .cairn/config and .cairn/.gitignore to Git.",
                    repo.root().join(cairn_repo::DOT_DIR).display()
                )),
                InitOutcome::AlreadyInitialized => {
                    out(format!("Cairn is already initialized in {}", repo.root().display()))
                }
            }
        }
        Command::Add { paths, follow_external_symlinks, output } => {
            let mut repo = context.open()?;
            if follow_external_symlinks {
                repo.follow_external_symlinks(true);
            }
            let rels = paths.iter().map(|p| context.rel(&repo, p)).collect::<Result<Vec<_>, _>>()?;
            let _lock = repo.lock(reporter)?;
            let outcomes = repo.add(&rels, reporter)?;
            output::added(&outcomes, output.json)
        }
        Command::Commit { path, output } => {
            let repo = context.open()?;
            let scope = path.map(|p| context.rel(&repo, &p)).transpose()?;
            let _lock = repo.lock(reporter)?;
            let outcomes = repo.commit(scope.as_deref(), reporter)?;
            output::added(&outcomes, output.json)
        }
        Command::Status { path, output } => {
            let repo = context.open()?;
            let scope = path.map(|p| context.rel(&repo, &p)).transpose()?;
            let statuses = repo.status(scope.as_deref(), reporter)?;
            let stale = if scope.is_none() { cairn_app::pipeline::stale_stages(&repo) } else { None };
            if output.json {
                return output::status_with_stages(&statuses, stale.as_deref());
            }
            output::status(&statuses, false)?;
            match stale {
                Some(stale) => pipelines::print_stale(&stale, true),
                None => Ok(()),
            }
        }
        Command::Checkout { path, force, output } => {
            let repo = context.open()?;
            let scope = path.map(|p| context.rel(&repo, &p)).transpose()?;
            let _lock = repo.lock(reporter)?;
            let outcomes = repo.checkout(scope.as_deref(), force, reporter)?;
            let restored = if scope.is_none() {
                cairn_app::content::checkout_outputs(&repo, force, reporter)?
            } else {
                Vec::new()
            };
            output::checkout(&outcomes, output.json)?;
            if !output.json {
                for label in restored {
                    out(format!("restored pipeline output {label}"))?;
                }
            }
            Ok(())
        }
        Command::Diff { old, new, output } => {
            let repo = context.open()?;
            let old = Side::Rev(old.unwrap_or_else(|| "HEAD".to_owned()));
            let new = new.map(Side::Rev).unwrap_or(Side::Workspace);
            let entries = repo.diff(&old, &new, reporter)?;
            output::diff(&entries, output.json)
        }
        Command::Ls { path, rev, output } => {
            let repo = context.open()?;
            let scope = path.map(|p| context.rel(&repo, &p)).transpose()?;
            let files = repo.ls(rev.as_deref(), scope.as_deref())?;
            output::files(&files, output.json)
        }
        Command::Cat { path, rev } => {
            let repo = context.open()?;
            let rel = context.rel(&repo, &path)?;
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            match repo.cat(&rel, rev.as_deref(), &mut lock) {
                Err(error)
                    if error.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
                {
                    Ok(())
                }
                result => Ok(result?),
            }
        }
        Command::Rm { paths } => {
            let repo = context.open()?;
            let rels = paths.iter().map(|p| context.rel(&repo, p)).collect::<Result<Vec<_>, _>>()?;
            let _lock = repo.lock(reporter)?;
            for rel in rels {
                repo.rm(&rel, reporter)?;
                out(format!(
                    "stopped tracking {}; remove its pointer from Git with `git rm --cached {}.cairn`",
                    display_bytes(&rel),
                    display_bytes(&rel)
                ))?;
            }
            Ok(())
        }
        Command::Unprotect { paths } => {
            let repo = context.open()?;
            let rels = paths.iter().map(|p| context.rel(&repo, p)).collect::<Result<Vec<_>, _>>()?;
            let _lock = repo.lock(reporter)?;
            for rel in rels {
                let count = repo.unprotect(&rel, reporter)?;
                out(format!("{}: {count} file(s) made editable", display_bytes(&rel)))?;
            }
            Ok(())
        }
        Command::Remote(command) => remotes::run_remote(&context, command),
        Command::Push(args) => remotes::push(&context, args, reporter),
        Command::Fetch(args) => remotes::fetch(&context, args, reporter),
        Command::Pull(args) => remotes::pull(&context, args, reporter),
        Command::Gc { cloud: true, remote, all_commits, workspace: _, force, output } => {
            remotes::gc_cloud(&context, remote.as_deref(), all_commits, force, &output, reporter)
        }
        Command::Gc { cloud: false, remote: _, all_commits, workspace, force, output } => {
            let ws = context.workspace()?;
            let _lock = ws.repo().lock(reporter)?;
            let scope = match (workspace, all_commits) {
                (true, _) => cairn_repo::GcScope::WorkTree,
                (false, true) => cairn_repo::GcScope::AllCommits,
                (false, false) => cairn_repo::GcScope::Refs,
            };
            let summary = cairn_app::content::gc(&ws, scope, force, reporter)?;
            if output.json {
                return json(&summary);
            }
            out(output::gc(&summary))
        }
        Command::Fsck { output } => {
            let repo = context.open()?;
            let report = repo.fsck(reporter)?;
            if output.json {
                json(&serde_json::json!({
                    "objects": report.objects,
                    "bytes": report.bytes,
                    "pointers": report.pointers,
                    "problems": report.problems,
                }))?;
            } else {
                for problem in &report.problems {
                    out(format!("problem: {problem}"))?;
                }
                out(format!(
                    "checked {} object(s) ({}) and {} pointer(s): {}",
                    report.objects,
                    human_bytes(report.bytes),
                    report.pointers,
                    if report.problems.is_empty() {
                        "ok".to_owned()
                    } else {
                        format!("{} problem(s)", report.problems.len())
                    }
                ))?;
            }
            if report.problems.is_empty() {
                Ok(())
            } else {
                Err(cairn_repo::RepoError::FsckFailed(report.problems.len()).into())
            }
        }
        Command::Run(args) => pipelines::run(&context, args, cli.quiet, reporter),
        Command::Explain { stage, output } => pipelines::explain(&context, &stage, &output),
        Command::Params(command) => pipelines::params_command(&context, command),
        Command::Metrics(command) => pipelines::metrics_command(&context, command),
        Command::Lineage { path, output } => pipelines::lineage(&context, &path, &output),
        Command::Partitions(command) => pipelines::partitions_command(&context, command),
        Command::Exp(ExpCommand::Show { limit, sort, filter, columns, csv, output }) => runs::show(
            &context.workspace()?,
            &cairn_app::runs::ShowRequest { limit, sort, filter, columns },
            if output.json {
                runs::Format::Json
            } else if csv {
                runs::Format::Csv
            } else {
                runs::Format::Table
            },
        ),
        Command::Exp(ExpCommand::Run { set, queue, run_all, jobs, name, add, output }) => exp::run(
            &context.workspace()?,
            exp::RunRequest {
                set,
                queue,
                run_all,
                jobs: jobs.max(1),
                name,
                add_keys: add,
                json: output.json,
            },
            cli.quiet,
        ),
        Command::Model(command) => {
            let ws = context.workspace()?;
            match command {
                ModelCommand::Register {
                    name,
                    path,
                    run,
                    training_data,
                    feature_names,
                    description,
                    output,
                } => model::register(
                    &ws,
                    &context.cwd,
                    &model::Register {
                        name: &name,
                        path: &path,
                        run: run.as_deref(),
                        training_data: training_data.as_deref(),
                        feature_names: &feature_names,
                        description: &description,
                        json: output.json,
                    },
                    reporter,
                ),
                ModelCommand::List { output } => model::list(&ws, output.json),
                ModelCommand::Versions { name, output } => model::versions(&ws, &name, output.json),
                ModelCommand::Show { reference, output } => model::show(&ws, &reference, output.json),
                ModelCommand::Alias { reference, alias, reason } => {
                    model::alias(&ws, &reference, &alias, &reason)
                }
                ModelCommand::Unalias { name, alias, reason } => model::unalias(&ws, &name, &alias, &reason),
                ModelCommand::History { name, alias, output } => {
                    model::history(&ws, &name, alias.as_deref(), output.json)
                }
                ModelCommand::Approve { reference, comment } => model::approve(&ws, &reference, &comment),
                ModelCommand::Policy { name, alias, approvals, require, allow_delete, clear } => {
                    model::policy(
                        &ws,
                        &name,
                        &alias,
                        cairn_app::registry::PolicyChange { approvals, require, allow_delete, clear },
                    )
                }
                ModelCommand::Rollout { target, canary, weight, shadow, clear, output } => serve::rollout(
                    &ws,
                    &serve::RolloutRequest {
                        target: &target,
                        canary,
                        weight,
                        shadows: &shadow,
                        clear,
                        json: output.json,
                    },
                ),
            }
        }
        Command::Plots(PlotsCommand::Show { runs, metrics, output }) => plots::show(
            &context.open()?,
            &plots::PlotRequest { runs, metrics, output: output.map(|o| context.cwd.join(o)) },
        ),
        Command::Exp(ExpCommand::Apply { id }) => exp::apply(&context.workspace()?, &id, reporter),
        Command::Exp(ExpCommand::Branch { id, name }) => exp::branch(&context.workspace()?, &id, &name),
        Command::Exp(ExpCommand::Remove { ids, queued }) => exp::remove(&context.workspace()?, &ids, queued),
        Command::Exp(ExpCommand::Push { remote, ids }) => {
            exp::push(&context.workspace()?, &remote, &ids, reporter)
        }
        Command::Exp(ExpCommand::Pull { remote }) => exp::pull(&context.workspace()?, &remote, reporter),
        Command::Exp(ExpCommand::Diff { a, b, all, output }) => {
            runs::diff(&context.workspace()?, &a, &b, all, output.json)
        }
        Command::Pipeline(pipelines::PipelineCommand::Schema) => pipelines::schema(),
        Command::Server { host, port, max_artifact_size, run_quota } => {
            let uploads = cairn_server::UploadLimits {
                max_artifact_bytes: max_artifact_size,
                run_quota_bytes: run_quota,
            };
            tracking::serve(&context.workspace()?, &host, port, uploads, cli.quiet)
        }
        Command::Serve {
            targets,
            host,
            port,
            grpc_port,
            onnxruntime,
            sessions,
            env_manager,
            python,
            batch_max,
            batch_wait_ms,
            max_body,
            allow_nan,
            no_log,
            no_profile,
            log_dir,
            log_remote,
            log_segment_mb,
            log_segment_secs,
            monitor,
            no_alerts,
        } => serve::serve(
            &context.workspace()?,
            serve::ServeRequest {
                targets,
                host,
                port,
                // With --port 0 (tests, scripts), gRPC takes a free port too unless told.
                grpc_port: grpc_port.unwrap_or(if port == 0 { 0 } else { 8081 }),
                onnxruntime: onnxruntime.map(|p| context.cwd.join(p)),
                sessions,
                local_python: env_manager == "local",
                python: python
                    .map(|p| if p.components().count() > 1 { context.cwd.join(p) } else { p })
                    .or_else(|| std::env::var_os("CAIRN_PYTHON").map(PathBuf::from))
                    .unwrap_or_else(|| PathBuf::from("python3")),
                batch_max: batch_max.filter(|&n| n > 1),
                batch_wait: std::time::Duration::from_millis(batch_wait_ms),
                max_body,
                allow_nan,
                log: !no_log,
                log_dir: log_dir.map(|d| context.cwd.join(d)),
                log_remote,
                segment_bytes: log_segment_mb.max(1) << 20,
                profiles: !no_profile,
                segment_age: std::time::Duration::from_secs(log_segment_secs.max(1)),
                monitor: monitor.map(|m| context.cwd.join(m)),
                alerts: !no_alerts,
            },
            cli.quiet,
        ),
        Command::Monitor { action: Some(action), .. } => {
            let repo = context.open()?;
            match action {
                MonitorCommand::Requests { model, feature, alert, select, output } => monitor::requests(
                    &repo,
                    &monitor::RequestsRequest {
                        select: select.resolve(model, &context.cwd),
                        feature,
                        alert,
                        json: output.json,
                    },
                ),
                MonitorCommand::Export {
                    model,
                    out,
                    format,
                    drifted_only,
                    with_labels,
                    labelled_only,
                    select,
                } => monitor::export(
                    &repo,
                    &monitor::ExportRequest {
                        select: select.resolve(model, &context.cwd),
                        out: context.cwd.join(out),
                        format,
                        drifted_only,
                        with_labels,
                        labelled_only,
                    },
                    reporter,
                ),
            }
        }
        Command::Monitor { action: None, model, select, html, window, output } => monitor::monitor(
            &context.open()?,
            &monitor::MonitorRequest {
                select: select.resolve(model.unwrap_or_default(), &context.cwd),
                html: html.map(|h| context.cwd.join(h)),
                window,
                json: output.json,
            },
        ),
        Command::Alerts { action, all, model, log_dir, output } => {
            let ws = context.workspace()?;
            let dir = |d: Option<PathBuf>| d.map(|d| context.cwd.join(d));
            match action {
                None => alerts::list(
                    &ws,
                    &alerts::ListRequest { all, model, log_dir: dir(log_dir), json: output.json },
                ),
                Some(AlertsCommand::Show { id, log_dir, output }) => {
                    alerts::show(&ws, &id, dir(log_dir), output.json)
                }
                Some(AlertsCommand::Check { config, log_dir, output }) => {
                    alerts::check(&ws, config.map(|c| context.cwd.join(c)), dir(log_dir), output.json)
                }
            }
        }
        Command::Trace { id, log_dir, remote, output } => serve::trace(
            &context.workspace()?,
            &cairn_app::serving::TraceRequest {
                trace_id: id,
                log_dir: log_dir.map(|d| context.cwd.join(d)),
                remote,
            },
            output.json,
        ),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "cairn", &mut script);
            write_stdout(&script)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| Failure::user(format!("cannot render the manual page: {e}"), None))?;
            write_stdout(&page)
        }
        Command::Config { key, value, user, unset, list } => {
            run_config(&context, key, value, user, unset, list)
        }
    }
}

fn run_config(
    context: &Context,
    key: Option<String>,
    value: Option<String>,
    user: bool,
    unset: bool,
    list: bool,
) -> Result<(), Failure> {
    let mut file = context.config_file(user)?;
    let path = file.path().to_path_buf();
    match (key, value) {
        _ if list => {
            for (key, value) in file.list() {
                // A metadata URL may carry a password: `--list` shows it redacted (ask for the
                // key itself to see it).
                let shown = if key == "meta.url" { cairn_meta::redact(&value) } else { value };
                out(format!("{key} = {shown}"))?;
            }
            Ok(())
        }
        (Some(key), None) if unset => {
            if !file.unset(&key)? {
                return Err(Failure::user(format!("`{key}` is not set in {}", path.display()), None));
            }
            Ok(())
        }
        (Some(_), Some(_)) if unset => Err(Failure::usage("--unset takes a key, not a value")),
        (Some(key), Some(value)) => Ok(file.set(&key, &value)?),
        (Some(key), None) => match file.get(&key)? {
            Some(value) => out(value),
            None => Err(Failure::user(
                format!("`{key}` is not set in {}", path.display()),
                Some("set it with `cairn config KEY VALUE`"),
            )),
        },
        (None, _) => Err(Failure::usage("name a KEY, or use --list (see `cairn config --help`)")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command a user can run shows at least one example in its `--help`, and no
    /// example line is so long that the terminal wraps it mid-way (a JSON body split in two
    /// cannot be copied).
    #[test]
    fn every_command_has_an_example_that_fits_the_terminal() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>, long: &mut Vec<String>) {
            let leaves: Vec<&clap::Command> =
                command.get_subcommands().filter(|c| c.get_name() != "help" && !c.is_hide_set()).collect();
            if leaves.is_empty() {
                let after = command.get_after_help().map(|h| h.to_string()).unwrap_or_default();
                if !after.contains("Example") {
                    missing.push(path.to_owned());
                }
                let examples = after.lines().skip_while(|l| !l.starts_with("Example"));
                for line in examples.filter(|l| l.starts_with("  ")) {
                    if line.chars().count() > 100 {
                        long.push(format!("{path}: {line}"));
                    }
                }
            }
            for sub in leaves {
                walk(sub, &format!("{path} {}", sub.get_name()), missing, long);
            }
        }
        let (mut missing, mut long) = (Vec::new(), Vec::new());
        walk(&super::Cli::command(), "cairn", &mut missing, &mut long);
        assert!(missing.is_empty(), "commands without an example in --help: {missing:?}");
        assert!(long.is_empty(), "example lines that wrap in an 100-column terminal:\n{}", long.join("\n"));
    }
}

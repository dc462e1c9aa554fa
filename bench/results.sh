# Sourced by the bench scripts: where their raw results go, for bench/plot.py.
#
#   results_init bench/results/NAME "COMMAND"   # empties the folder, writes meta.json
#   keep FILE RESULT                           # FILE's last line (a JSON result) as RESULT
#
# meta.json says which script, command, commit, date and machine produced
# the results; every figure drawn from them prints it in its footer.
results_init() {
  RESULTS=$1
  rm -rf "$RESULTS"; mkdir -p "$RESULTS"
  python3 - "$RESULTS/meta.json" "$2" <<'PY'
import datetime, json, os, subprocess, sys
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
# Uncommitted changes to tracked files: the commit alone does not say what ran.
if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip():
    commit += "+changes"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
json.dump({"command": sys.argv[2], "commit": commit,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{os.cpu_count()} cores, {cpu}"}, open(sys.argv[1], "w"), indent=1)
PY
}
keep() { tail -1 "$1" >"$RESULTS/$2"; }

/**
 * Finds the Kubernetes binaries of the test clusters (kube-apiserver, kubectl, etcd, kwok) and the
 * kwok stage definitions, building the binaries once per machine with `build.sh` when needed.
 *
 * Lookup order: `TOWER_K8S_BIN` (a dir with all four), then `KUBEBUILDER_ASSETS` (kube-apiserver,
 * etcd and kubectl; kwok from the build cache, built if missing), then the build cache of
 * `tests/cluster/build.sh` (built if missing, which needs Go >= 1.26 on PATH).
 *
 * @module
 */

/** Absolute paths of the binaries a test cluster runs. */
export interface ClusterBinaries {
  /** kube-apiserver */
  kubeApiserver: string;
  /** kubectl, used by the harness and by tests as the reference client */
  kubectl: string;
  /** etcd 3.6 */
  etcd: string;
  /** kwok, the fake kubelet */
  kwok: string;
  /** Where they came from, for messages. */
  source: "TOWER_K8S_BIN" | "KUBEBUILDER_ASSETS" | "build cache";
}

/** Where to look; defaults to this process's environment. Tests pass their own to isolate the lookup. */
export interface FindBinariesOptions {
  /** Environment to read TOWER_K8S_BIN, KUBEBUILDER_ASSETS, PATH, HOME and XDG_CACHE_HOME from. */
  env?: Record<string, string | undefined>;
}

const HERE = new URL(".", import.meta.url).pathname;
/** The build script next to this file; its `--dir` output is the cache dir. */
export const BUILD_SCRIPT: string = `${HERE}build.sh`;
const GO_MISSING_HELP = "Install Go >= 1.26 (https://go.dev/dl) and put its bin dir on PATH so the " +
  "harness can build the binaries once (tests/cluster/build.sh, about 6 min on 2 cores with downloads, cached after), " +
  "or set TOWER_K8S_BIN to a dir holding kube-apiserver, kubectl, etcd and kwok " +
  "(KUBEBUILDER_ASSETS with kube-apiserver, etcd and kubectl is honoured too, but kwok still needs Go " +
  "or the build cache).";

type Env = Record<string, string | undefined>;

async function isExecutable(path: string): Promise<boolean> {
  try {
    const st = await Deno.stat(path);
    return st.isFile && st.mode !== null && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** Returns the path of `name` on the PATH of `env`, or undefined. */
export async function lookPath(name: string, env: Env): Promise<string | undefined> {
  for (const dir of (env.PATH ?? "").split(":")) {
    if (dir !== "" && await isExecutable(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  return undefined;
}

async function missingIn(dir: string, names: string[]): Promise<string[]> {
  const missing = [];
  for (const n of names) if (!await isExecutable(`${dir}/${n}`)) missing.push(n);
  return missing;
}

/** The environment build.sh runs with: the caller's Go settings, plus the basic tools dirs on PATH. */
function scriptEnv(env: Env): Record<string, string> {
  const out: Record<string, string> = {};
  for (
    const k of ["PATH", "HOME", "XDG_CACHE_HOME", "GOPATH", "GOMODCACHE", "GOCACHE", "GOPROXY", "GOSUMDB"]
  ) {
    const v = env[k];
    if (v !== undefined) out[k] = v;
  }
  // build.sh needs coreutils even when the caller's PATH is bare; Go itself is looked up beforehand.
  out.PATH = `${out.PATH ?? ""}:/usr/bin:/bin`;
  return out;
}

/** The dir `build.sh` caches the binaries in (nothing is built). */
export async function buildCacheDir(opts: FindBinariesOptions = {}): Promise<string> {
  const env = opts.env ?? Deno.env.toObject();
  const out = await new Deno.Command("/bin/bash", {
    args: [BUILD_SCRIPT, "--dir"],
    env: scriptEnv(env),
    clearEnv: true,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`${BUILD_SCRIPT} --dir failed`);
  return new TextDecoder().decode(out.stdout).trim();
}

/** Builds the missing ones of `names` into the cache with build.sh, streaming its progress to stderr. */
async function build(names: string[], env: Env): Promise<string> {
  const dir = await buildCacheDir({ env });
  if ((await missingIn(dir, names)).length === 0) return dir;
  if (await lookPath("go", env) === undefined) {
    throw new Error(
      `tower test cluster: ${names.join(", ")} not found in ${dir} and Go is not on PATH. ${GO_MISSING_HELP}`,
    );
  }
  const child = new Deno.Command("/bin/bash", {
    args: [BUILD_SCRIPT, ...names],
    env: scriptEnv(env),
    clearEnv: true,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const out = await child.output();
  if (!out.success) {
    throw new Error(
      `tower test cluster: ${BUILD_SCRIPT} ${
        names.join(" ")
      } failed (exit ${out.code}); see its output above`,
    );
  }
  return dir;
}

/** Finds (or builds, once per machine) the binaries a test cluster needs. */
export async function findBinaries(opts: FindBinariesOptions = {}): Promise<ClusterBinaries> {
  const env = opts.env ?? Deno.env.toObject();
  const at = (dir: string, kwokDir: string, source: ClusterBinaries["source"]): ClusterBinaries => ({
    kubeApiserver: `${dir}/kube-apiserver`,
    kubectl: `${dir}/kubectl`,
    etcd: `${dir}/etcd`,
    kwok: `${kwokDir}/kwok`,
    source,
  });
  const towerBin = env.TOWER_K8S_BIN;
  if (towerBin) {
    const missing = await missingIn(towerBin, ["kube-apiserver", "kubectl", "etcd", "kwok"]);
    if (missing.length > 0) {
      throw new Error(`TOWER_K8S_BIN=${towerBin} lacks executable ${missing.join(", ")}`);
    }
    return at(towerBin, towerBin, "TOWER_K8S_BIN");
  }
  const assets = env.KUBEBUILDER_ASSETS;
  if (assets) {
    const missing = await missingIn(assets, ["kube-apiserver", "kubectl", "etcd"]);
    if (missing.length > 0) {
      throw new Error(`KUBEBUILDER_ASSETS=${assets} lacks executable ${missing.join(", ")}`);
    }
    const kwokDir = (await missingIn(assets, ["kwok"])).length === 0 ? assets : await build(["kwok"], env);
    return at(assets, kwokDir, "KUBEBUILDER_ASSETS");
  }
  const dir = await build(["kube-apiserver", "kubectl", "etcd", "kwok"], env);
  return at(dir, dir, "build cache");
}

/**
 * Path of a Go-built test tool listed in `build.sh` (kubectl, helm, promtool, …), building it once per
 * machine if it is not cached yet (`deno task test` has built them all before any test starts).
 */
export async function findGoTool(name: string, opts: FindBinariesOptions = {}): Promise<string> {
  const env = opts.env ?? Deno.env.toObject();
  return `${await build([name], env)}/${name}`;
}

/** The kwok version pinned by the kwok wrapper module (tests/cluster/gomod/kwok/go.mod). */
export async function kwokVersion(): Promise<string> {
  const gomod = await Deno.readTextFile(`${HERE}gomod/kwok/go.mod`);
  const m = gomod.match(/^\s*sigs\.k8s\.io\/kwok (v\S+)/m);
  if (!m?.[1]) throw new Error(`no sigs.k8s.io/kwok requirement in ${HERE}gomod/kwok/go.mod`);
  return m[1];
}

/**
 * Returns the dir of kwok's stage YAML (`kustomize/stage` of the kwok module in the Go module cache),
 * downloading the module with Go if it is not there. kwok >= 0.8 has no built-in stages, and the
 * stages are not copied into this repo.
 */
export async function findKwokStages(opts: FindBinariesOptions = {}): Promise<string> {
  const env = opts.env ?? Deno.env.toObject();
  const version = await kwokVersion();
  // Kept next to the binaries by build.sh (or shipped in a TOWER_K8S_BIN / KUBEBUILDER_ASSETS dir).
  for (const dir of [env.TOWER_K8S_BIN, env.KUBEBUILDER_ASSETS, await buildCacheDir({ env })]) {
    if (dir && await exists(`${dir}/kwok-stage/pod/fast/pod-ready.yaml`)) return `${dir}/kwok-stage`;
  }
  const go = await lookPath("go", env);
  const caches: string[] = [];
  if (env.GOMODCACHE) caches.push(env.GOMODCACHE);
  if (go) {
    const out = await new Deno.Command(go, {
      args: ["env", "GOMODCACHE"],
      env: scriptEnv(env),
      clearEnv: true,
    })
      .output();
    if (out.success) caches.push(new TextDecoder().decode(out.stdout).trim());
  }
  const rel = `sigs.k8s.io/kwok@${version}/kustomize/stage`;
  for (const c of caches) {
    if (await exists(`${c}/${rel}/pod/fast/pod-ready.yaml`)) return `${c}/${rel}`;
  }
  if (!go) {
    throw new Error(
      `tower test cluster: kwok's stage YAML (${rel}) is not in the Go module cache` +
        `${caches.length ? ` (${caches.join(", ")})` : ""} and Go is not on PATH. ${GO_MISSING_HELP} ` +
        "Or set GOMODCACHE to a module cache holding sigs.k8s.io/kwok@" + version + ".",
    );
  }
  const dl = await new Deno.Command(go, {
    args: ["mod", "download", `sigs.k8s.io/kwok@${version}`],
    cwd: `${HERE}gomod/kwok`,
    env: scriptEnv(env),
    clearEnv: true,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  for (const c of caches) if (await exists(`${c}/${rel}/pod/fast/pod-ready.yaml`)) return `${c}/${rel}`;
  throw new Error(
    `tower test cluster: go mod download sigs.k8s.io/kwok@${version} (exit ${dl.code}) did not provide ${rel}`,
  );
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Test-cluster PKI made with the `openssl` CLI: a CA per cluster, the apiserver serving cert, an admin
 * client cert and the service-account signing key. EC P-256 throughout because it is fast to generate.
 *
 * @module
 */

/** Paths of the PEM files written by {@linkcode writeClusterPki}. */
export interface ClusterPki {
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  adminCert: string;
  adminKey: string;
  saKey: string;
  saPub: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        "tower test cluster: openssl is not installed (Debian/Ubuntu: apt-get install openssl)",
      );
    }
    throw e;
  }
  if (!out.success) {
    throw new Error(`openssl ${args.slice(0, 2).join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/** Writes the cluster's PKI into `dir` (which must exist) and returns the file paths. */
export async function writeClusterPki(dir: string, clusterName: string): Promise<ClusterPki> {
  const p = (f: string) => `${dir}/${f}`;
  const pki: ClusterPki = {
    caCert: p("ca.crt"),
    caKey: p("ca.key"),
    serverCert: p("apiserver.crt"),
    serverKey: p("apiserver.key"),
    adminCert: p("admin.crt"),
    adminKey: p("admin.key"),
    saKey: p("sa.key"),
    saPub: p("sa.pub"),
  };
  const issued = (key: string, cert: string, subj: string, exts: string[]) =>
    openssl([
      "req",
      "-x509",
      ...EC,
      "-keyout",
      key,
      "-out",
      cert,
      "-subj",
      subj,
      "-days",
      "30",
      "-CA",
      pki.caCert,
      "-CAkey",
      pki.caKey,
      ...exts.flatMap((e) => ["-addext", e]),
    ], dir);
  await Promise.all([
    openssl([
      "req",
      "-x509",
      ...EC,
      "-keyout",
      pki.caKey,
      "-out",
      pki.caCert,
      "-subj",
      `/CN=tower-test-ca-${clusterName}`,
      "-days",
      "30",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ], dir),
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", pki.saKey], dir)
      .then(() => openssl(["ec", "-in", pki.saKey, "-pubout", "-out", pki.saPub], dir)),
  ]);
  await Promise.all([
    issued(pki.serverKey, pki.serverCert, "/CN=kube-apiserver", [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=serverAuth",
      "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default," +
      "DNS:kubernetes.default.svc",
    ]),
    issued(pki.adminKey, pki.adminCert, "/O=system:masters/CN=admin", [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=clientAuth",
    ]),
  ]);
  return pki;
}

'use strict';
// osls plugin: `serverless package` and `serverless deploy` build the zip they deploy, as
// serverless-python-requirements builds requirements. Before osls looks for `package.artifact`, it runs
//
//   PYTHON -m slimserve bundle ARTIFACT --target aws-lambda --arch ARCH --python X.Y --out DIR
//
// with ARTIFACT the `bundleArtifact` param, ARCH and X.Y from `provider.architecture` / `provider.runtime`,
// DIR the folder of `package.artifact`, PYTHON $SLIMSERVE_PYTHON or the project's .venv/bin/python.
// The builder reuses its previous zip when nothing it is made from changed (optimizer/bundle/reuse.py).
// `deploy function` uploads the zip directly to Lambda, where a 50 MiB zipped limit applies that S3
// uploads do not have: a bigger zip stops here with what to run instead.
// `--param="buildBundle=false"` packages whatever zip is already there.
//
// The HTTP function's memory: with the `memorySize` param at `auto` (the default), provider.memorySize becomes
// the artifact manifest's `extra.serving.recommended_memory_mb` (`slimserve optimize` measured the serving
// process's peak RSS and added its headroom); a number sets it as given. osls reads provider.memorySize
// when it compiles the functions, after this hook.
// `--param="fetchFrom=s3://BUCKET/PREFIX"` leaves the model out of the zip (`--fetch-from`: the function fetches
// it at cold start, pinned by the manifest's sha256; a `delivery: fetch` artifact needs it) and grants both
// functions' roles s3:GetObject on PREFIX/* and nothing else of the bucket.

const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const MiB = 2 ** 20;
const LAMBDA_MEMORY_MB = [128, 10240];
const OSLS_DEFAULT_MB = 1024;
const TMP_DEFAULT_MB = 512; // Lambda's default /tmp, and SnapStart's most
const TMP_MAX_MB = 10240;

class SlimserveBundle {
  constructor(serverless, options, utils = {}) {
    this.serverless = serverless;
    this.log = utils.log || { notice: (text) => process.stderr.write(`${text}\n`) };
    this.hooks = {
      'before:package:createDeploymentArtifacts': () => this.memoryThenBundle(false),
      'before:package:function:package': () => this.memoryThenBundle(true),
    };
  }

  fail(message) {
    throw new this.serverless.classes.Error(message, 'SLIMSERVE_BUNDLE');
  }

  settings() {
    const service = this.serverless.service;
    const custom = (service.custom && service.custom.slimserveBundle) || {};
    const zip = service.package && service.package.artifact;
    if (!zip) this.fail('serverless.yml has no package.artifact: the slimserve bundle plugin builds that zip');
    const runtime = String(service.provider.runtime || 'python3.12');
    return {
      build: String(custom.build) !== 'false',
      artifact: String(custom.artifact || ''),
      memory: String(custom.memorySize === undefined ? 'auto' : custom.memorySize).trim(),
      fetchFrom: String(custom.fetchFrom || ''),
      arch: String(service.provider.architecture || 'x86_64'),
      python: runtime.replace(/^python/, ''),
      zip,
      out: path.dirname(zip),
    };
  }

  interpreter(dir) {
    const chosen = process.env.SLIMSERVE_PYTHON || path.join(dir, '.venv', 'bin', 'python');
    if (!fs.existsSync(chosen)) {
      this.fail(
        `no Python with slimserve at ${chosen}: run \`make demo\` (it creates .venv), ` +
          'or set SLIMSERVE_PYTHON to one with slimserve[optimizer,aws] installed'
      );
    }
    return chosen;
  }

  // The artifact's manifest.json as {manifestPath, manifest}; manifest null when there is none.
  manifest(s) {
    const manifestPath = path.resolve(this.serverless.serviceDir, s.artifact || '.', 'manifest.json');
    if (!s.artifact || !fs.existsSync(manifestPath)) return { manifestPath, manifest: null };
    try {
      return { manifestPath, manifest: JSON.parse(fs.readFileSync(manifestPath, 'utf-8')) };
    } catch (err) {
      return this.fail(`${manifestPath} is not valid JSON: ${err.message}`);
    }
  }

  memoryThenBundle(directUpload) {
    this.memory();
    this.fetchRoom();
    this.bundle(directUpload);
  }

  // A fetched model lands in /tmp, which Lambda sizes at 512 MB unless told otherwise, and which SnapStart
  // cannot raise: a model that needs more gets the /tmp it needs on every function (ephemeralStorageSize), and
  // the HTTP function goes without SnapStart (its cold start then follows the budget's reason: past the 10 s
  // init, the first request after a cold start waits for the load).
  fetchRoom() {
    const s = this.settings();
    const { manifestPath, manifest } = this.manifest(s);
    if (!manifest) return;
    if (manifest.delivery !== 'fetch' && !s.fetchFrom) return;
    const files = Object.values(manifest.files || {}).reduce((sum, f) => sum + (Number(f.bytes) || 0), 0);
    const inflated = Number(((manifest.extra || {}).inflated || {}).bytes) || 0;
    const needMb = Math.ceil(((files + inflated) * 1.2) / MiB); // 20 % for the staging copy's neighbours and logs
    if (needMb <= TMP_DEFAULT_MB) return;
    if (needMb > TMP_MAX_MB) this.fail(`${manifestPath}: fetching needs ~${needMb} MB of /tmp, over Lambda's ${TMP_MAX_MB} MB`);
    const functions = this.serverless.service.functions || {};
    for (const fn of Object.values(functions)) {
      if (fn && fn.ephemeralStorageSize === undefined) fn.ephemeralStorageSize = needMb;
    }
    if (functions.http && functions.http.snapStart) {
      functions.http.snapStart = false;
      this.log.notice(`ephemeralStorageSize ${needMb} MB for the fetched model; SnapStart off (it allows at most ${TMP_DEFAULT_MB} MB of /tmp)`);
    } else {
      this.log.notice(`ephemeralStorageSize ${needMb} MB for the fetched model`);
    }
  }

  memory() {
    const s = this.settings();
    const provider = this.serverless.service.provider;
    const [low, high] = LAMBDA_MEMORY_MB;
    if (s.memory !== 'auto' && s.memory !== '') {
      const mb = Number(s.memory);
      if (!Number.isInteger(mb) || mb < low || mb > high) {
        this.fail(`the memorySize param ${JSON.stringify(s.memory)} must be auto or a whole number of MB from ${low} to ${high}`);
      }
      provider.memorySize = mb;
      return;
    }
    const { manifestPath, manifest } = this.manifest(s);
    if (!manifest) {
      this.log.notice(`memorySize auto: no manifest at ${manifestPath}; osls's default ${OSLS_DEFAULT_MB} MB`);
      return;
    }
    const serving = (manifest.extra && manifest.extra.serving) || {};
    const mb = serving.recommended_memory_mb;
    if (!Number.isInteger(mb) || mb < low || mb > high) {
      this.log.notice(
        `memorySize auto: ${manifestPath} recommends no Lambda memory (optimized before memory was measured, or for ` +
          `another target); osls's default ${OSLS_DEFAULT_MB} MB`
      );
      return;
    }
    provider.memorySize = mb;
    const peak = (serving.peak_rss_bytes / MiB).toFixed(0);
    this.log.notice(`memorySize ${mb} MB: the artifact's recommendation (peak RSS ${peak} MiB x ${serving.headroom})`);
    // Measured at fewer rows than the request limits admit (long texts): the memory holds only those, so the
    // requests are held to them too, unless serverless.yml sets the cap itself.
    const env = (provider.environment = provider.environment || {});
    if (Number.isInteger(serving.batch) && serving.batch < serving.limit_batch && env.SLIMSERVE_MAX_REQUEST_BATCH === undefined) {
      env.SLIMSERVE_MAX_REQUEST_BATCH = String(serving.batch);
      this.log.notice(`SLIMSERVE_MAX_REQUEST_BATCH ${serving.batch}: the rows that memory was measured at`);
    }
  }

  bundle(directUpload) {
    const dir = this.serverless.serviceDir;
    const s = this.settings();
    if (!s.build) return this.grantFetch(path.resolve(dir, s.out, 'bundle.json'));
    if (!s.artifact) this.fail('the bundleArtifact param is empty: name the artifact folder to bundle');
    if (!fs.existsSync(path.resolve(dir, s.artifact, 'manifest.json'))) {
      this.fail(
        `no artifact at ${s.artifact}: run \`make demo\` (or \`slimserve optimize SPEC --out ${s.artifact}\`), ` +
          'or name another with --param="bundleArtifact=DIR"'
      );
    }
    const args = ['-m', 'slimserve', 'bundle', s.artifact, '--target', 'aws-lambda', '--arch', s.arch];
    args.push('--python', s.python, '--out', s.out);
    if (s.fetchFrom) args.push('--fetch-from', s.fetchFrom);
    this.log.notice(`slimserve bundle ${s.artifact} --arch ${s.arch} --python ${s.python} --out ${s.out}`);
    const run = spawnSync(this.interpreter(dir), args, {
      cwd: dir,
      stdio: ['ignore', 'inherit', 'pipe'],
      encoding: 'utf-8',
      maxBuffer: 16 * MiB,
    });
    if (run.stderr) process.stderr.write(run.stderr);
    if (run.error) this.fail(`cannot run slimserve bundle: ${run.error.message}`);
    if (run.status !== 0) {
      const said = (run.stderr || '').split('\n').filter((line) => line.startsWith('slimserve: error: '));
      const why = said.length ? said[said.length - 1].replace('slimserve: error: ', '') : `exit ${run.status}`;
      this.fail(`slimserve bundle failed: ${why}`);
    }
    if (directUpload) this.checkDirectUpload(path.resolve(dir, s.out, 'bundle.json'), s.zip);
    this.grantFetch(path.resolve(dir, s.out, 'bundle.json'));
  }

  // The zip's artifact/fetch.json names where the model is: let the HTTP function's role (already in the
  // compiled template) and BatchRole (merged from `resources` later) read that prefix, and only it.
  grantFetch(reportPath) {
    if (!fs.existsSync(reportPath)) return;
    const report = JSON.parse(fs.readFileSync(reportPath, 'utf-8'));
    const location = (report.artifact && report.artifact.fetch_from) || '';
    const match = /^s3:\/\/([^/]+)\/?([^#]*)#sha256=[0-9a-f]{64}$/.exec(location);
    if (!match) return;
    const prefix = match[2].replace(/\/+$/, '');
    const statement = {
      Sid: 'FetchTheArtifactOnly',
      Effect: 'Allow',
      Action: 's3:GetObject',
      Resource: { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, `:s3:::${match[1]}/${prefix ? `${prefix}/` : ''}*`]] },
    };
    const service = this.serverless.service;
    const compiled = service.provider.compiledCloudFormationTemplate.Resources.IamRoleLambdaExecution;
    const resources = (service.resources && service.resources.Resources) || {};
    const roles = [compiled, resources.BatchRole].filter((role) => role && role.Properties && role.Properties.Policies);
    for (const role of roles) role.Properties.Policies[0].PolicyDocument.Statement.push(statement);
    this.log.notice(`slimserve: the functions fetch their model from ${location}; granted s3:GetObject on it`);
  }

  checkDirectUpload(reportPath, zip) {
    const report = JSON.parse(fs.readFileSync(reportPath, 'utf-8'));
    const limit = report.direct_upload_limit_bytes;
    const size = report.sizes && report.sizes.zipped_bytes;
    if (limit && size > limit) {
      this.fail(
        `${zip} is ${(size / MiB).toFixed(1)} MiB, over Lambda's ${(limit / MiB).toFixed(0)} MiB limit ` +
          'for a direct upload, which `deploy function` is: run `serverless deploy` (it uploads through S3)'
      );
    }
  }
}

module.exports = SlimserveBundle;

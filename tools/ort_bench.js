#!/usr/bin/node
// The ONNX Runtime column of bench_realwidth: times the models tools/export_onnx.py wrote
// (one transformer call at the CFG batch, one VAE decode, and the whole pipeline of 20
// steps: text encoder, transformer + guidance + flow-match Euler steps, VAE, uint8) with
// onnxruntime-node on the CPU, on the inputs bench_realwidth wrote, and writes each stage's
// output for the parity check. The JSON on the last line has every time, the medians and
// each stage's peak RSS.
//
//   cd tools/ort && npm install --ignore-scripts     # onnxruntime-node (its CPU library ships in the package)
//   node tools/ort_bench.js --onnx DIR --inputs in.safetensors --out out.safetensors \
//        [--threads 2] [--reps 3] [--warmup 1] [--steps 20] [--guidance 4.5] [--stages transformer,vae_decoder,total]
//
// Inputs (safetensors, as bench_realwidth writes them): hidden_states, timestep,
// encoder_hidden_states, encoder_attention_mask (one transformer call); vae_latents (one
// decode); and for the pipeline: latents (initial noise [1, 4, h, w]), cond_ids, cond_mask,
// uncond_ids, uncond_mask ([1, L] token ids and masks from Stagecraft's tokenizer; the other
// two sides tokenize inside their timed pipeline, well under a millisecond here),
// sched_timesteps ([steps] the transformer's timestep per step) and sched_sigmas
// ([steps + 1] flow-match sigmas).
'use strict';
const fs = require('fs');
const path = require('path');

function parseArgs(argv) {
  const o = {threads: 2, reps: 3, warmup: 1, guidance: 4.5, stages: 'transformer,vae_decoder,total'};
  for (let i = 2; i < argv.length; ++i) {
    const k = argv[i].replace(/^--/, '');
    const v = argv[++i];
    if (v === undefined) throw new Error(`--${k} needs a value`);
    o[k] = ['threads', 'reps', 'warmup', 'steps'].includes(k) ? parseInt(v, 10) : k === 'guidance' ? parseFloat(v) : v;
  }
  for (const k of ['onnx', 'inputs', 'out'])
    if (!o[k]) throw new Error(`--${k} is required`);
  return o;
}

// ---- safetensors (little-endian; the dtypes bench_realwidth and reference.py write)
const DT = {F32: Float32Array, F64: Float64Array, I64: BigInt64Array, I32: Int32Array, U8: Uint8Array};

function readSafetensors(file) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const Ctor = DT[info.dtype];
    if (!Ctor) throw new Error(`${file}: ${name} has dtype ${info.dtype}, which this reader does not know`);
    const [a, b] = info.data_offsets;
    const bytes = buf.subarray(8 + n + a, 8 + n + b);
    const data = new Ctor(bytes.byteLength / Ctor.BYTES_PER_ELEMENT);
    new Uint8Array(data.buffer).set(bytes);  // copy: the slice need not be aligned
    out[name] = {dtype: info.dtype, shape: info.shape, data};
  }
  return out;
}

function writeSafetensors(file, tensors) {
  const header = {};
  const blobs = [];
  let off = 0;
  for (const name of Object.keys(tensors).sort()) {
    const t = tensors[name];
    const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = {dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes.length]};
    blobs.push(bytes);
    off += bytes.length;
  }
  let h = Buffer.from(JSON.stringify(header), 'utf8');
  h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  fs.writeFileSync(file, Buffer.concat([len, h, ...blobs]));
}

// ---- peak RSS of one stage: reset VmHWM (Linux >= 4.0), read it after
function resetPeak() {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch (e) {
    return false;
  }
}
function peakMiB() {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return parseInt(m[1], 10) / 1024;
  } catch (e) { /* fall through */ }
  return process.resourceUsage().maxRSS / 1024;
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

async function main() {
  const o = parseArgs(process.argv);
  let ort;
  try {
    ort = require(path.join(__dirname, 'ort', 'node_modules', 'onnxruntime-node'));
  } catch (e) {
    console.error(`onnxruntime-node is not installed: cd ${path.join(__dirname, 'ort')} && npm install --ignore-scripts` +
                  ` (${e.message.split('\n')[0]})`);
    process.exit(3);
  }
  // Waiting threads sleep unless OMP_WAIT_POLICY=ACTIVE, as bench_realwidth gives PyTorch's OpenMP
  // (threads that spin collapse on a shared, oversubscribed CPU; Stagecraft's pool sleeps).
  const spin = (process.env.OMP_WAIT_POLICY || '').toUpperCase() === 'ACTIVE' ? '1' : '0';
  const opts = {intraOpNumThreads: o.threads, interOpNumThreads: 1, executionMode: 'sequential',
                graphOptimizationLevel: 'all', executionProviders: ['cpu'],
                extra: {session: {intra_op: {allow_spinning: spin}, inter_op: {allow_spinning: spin}}}};
  const t0 = performance.now();
  const stages = o.stages.split(',');
  const need = new Set(stages.includes('total') ? ['text_encoder', 'transformer', 'vae_decoder'] : stages);
  const sess = {};
  for (const name of need) sess[name] = await ort.InferenceSession.create(path.join(o.onnx, `${name}.onnx`), opts);
  const inp = readSafetensors(o.inputs);
  const res = {threads: o.threads, reps: o.reps, warmup: o.warmup, ort: ort.env.versions.node, allow_spinning: spin,
               load_ms: performance.now() - t0};
  const outs = {};
  const f32 = (t) => new ort.Tensor('float32', t.data instanceof Float32Array ? t.data : Float32Array.from(t.data), t.shape);

  async function stage(name, fn, warmup) {
    const reset = resetPeak();
    const ms = [], cpu = [];
    let y;
    for (let i = 0; i < warmup + o.reps; ++i) {
      const t = performance.now(), c = process.cpuUsage();
      y = await fn();
      if (i >= warmup) {
        ms.push(performance.now() - t);
        const d = process.cpuUsage(c);  // all threads of the process
        cpu.push((d.user + d.system) / 1000);
      }
    }
    res[name] = {ms, median_ms: median(ms), cpu_ms: cpu, peak_rss_mib: peakMiB(), peak_rss_reset: reset,
                 rss_mib_after: process.memoryUsage().rss / 1048576};
    return y;
  }

  if (stages.includes('transformer')) {
    const feeds = {hidden_states: f32(inp.hidden_states), encoder_hidden_states: f32(inp.encoder_hidden_states),
                   timestep: f32(inp.timestep), encoder_attention_mask: f32(inp.encoder_attention_mask)};
    const y = await stage('transformer', async () => (await sess.transformer.run(feeds)).sample, o.warmup);
    outs.transformer = {dtype: 'F32', shape: y.dims, data: y.data};
  }
  if (stages.includes('vae_decoder')) {
    const feeds = {latents: f32(inp.vae_latents)};
    const y = await stage('vae_decoder', async () => (await sess.vae_decoder.run(feeds)).sample, o.warmup);
    outs.vae_decoder = {dtype: 'F32', shape: y.dims, data: y.data};
  }
  if (stages.includes('total')) {
    const parts = [];
    const ts = inp.sched_timesteps.data, sig = inp.sched_sigmas.data;
    const steps = ts.length;
    const L = inp.cond_ids.shape[1];
    const i64 = (a, b) => {
      const d = new BigInt64Array(2 * L);
      for (let j = 0; j < L; ++j) { d[j] = BigInt(a[j]); d[L + j] = BigInt(b[j]); }
      return d;
    };
    const g = o.guidance;
    const gen = async () => {
      const p = {};
      let t = performance.now();
      // [uncond, cond] as diffusers batches classifier-free guidance
      const te = await sess.text_encoder.run({
        input_ids: new ort.Tensor('int64', i64(inp.uncond_ids.data, inp.cond_ids.data), [2, L]),
        attention_mask: new ort.Tensor('int64', i64(inp.uncond_mask.data, inp.cond_mask.data), [2, L])});
      const emb = te.last_hidden_state;
      const cmask = new Float32Array(2 * L);
      for (let j = 0; j < L; ++j) { cmask[j] = Number(inp.uncond_mask.data[j]); cmask[L + j] = Number(inp.cond_mask.data[j]); }
      const maskT = new ort.Tensor('float32', cmask, [2, L]);
      let now = performance.now();
      p.text_encoder = now - t;
      t = now;
      const shape = inp.latents.shape;
      const n = inp.latents.data.length;
      let lat = Float32Array.from(inp.latents.data);
      for (let s = 0; s < steps; ++s) {
        const x = new Float32Array(2 * n);
        x.set(lat, 0);
        x.set(lat, n);
        const out = (await sess.transformer.run({
          hidden_states: new ort.Tensor('float32', x, [2, ...shape.slice(1)]), encoder_hidden_states: emb,
          timestep: new ort.Tensor('float32', Float32Array.from([ts[s], ts[s]]), [2]),
          encoder_attention_mask: maskT})).sample.data;
        const dt = Math.fround(Math.fround(sig[s + 1]) - Math.fround(sig[s]));
        const next = new Float32Array(n);
        for (let j = 0; j < n; ++j) {
          const u = out[j], c = out[n + j];
          const e = Math.fround(u + Math.fround(g * Math.fround(c - u)));
          next[j] = Math.fround(lat[j] + Math.fround(dt * e));
        }
        lat = next;
      }
      now = performance.now();
      p.denoise = now - t;
      t = now;
      const img = (await sess.vae_decoder.run({latents: new ort.Tensor('float32', lat, shape)})).sample;
      now = performance.now();
      p.vae_decoder = now - t;
      t = now;
      const [, C, H, W] = img.dims;
      const u8 = new Uint8Array(H * W * C);
      for (let c = 0; c < C; ++c)
        for (let y = 0; y < H; ++y)
          for (let xx = 0; xx < W; ++xx) {
            const v = img.data[(c * H + y) * W + xx] / 2 + 0.5;
            u8[(y * W + xx) * C + c] = Math.round(Math.min(1, Math.max(0, v)) * 255);
          }
      p.postprocess = performance.now() - t;
      parts.push(p);
      return {img, u8, H, W, C};
    };
    // No warm-up when the two other stages ran before in this process: they warmed every large layer.
    const warm = stages.includes('transformer') && stages.includes('vae_decoder') ? 0 : o.warmup;
    const r = await stage('total', gen, warm);
    const kept = parts.slice(warm);
    res.total.parts_median_ms = {};
    for (const k of Object.keys(kept[0])) res.total.parts_median_ms[k] = median(kept.map((q) => q[k]));
    outs.image = {dtype: 'F32', shape: r.img.dims, data: r.img.data};
    outs.image_u8 = {dtype: 'U8', shape: [1, r.H, r.W, r.C], data: r.u8};
  }
  writeSafetensors(o.out, outs);
  console.log(JSON.stringify(res));
}

main().catch((e) => {
  console.error(`ort_bench: ${e.stack || e}`);
  process.exit(1);
});

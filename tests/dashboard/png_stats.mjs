// Reads a PNG screenshot (8-bit RGB or RGBA, not interlaced: what Chromium writes) with
// Node's own zlib and prints what the dashboard test checks, as JSON:
//   {"width", "height", "distinctColours", "share": {"#005eb8": fraction of pixels, ...}}
//
//   node png_stats.mjs FILE.png [#rrggbb ...]
import { readFileSync } from "node:fs";
import { inflateSync } from "node:zlib";

const [file, ...colours] = process.argv.slice(2);
const png = readFileSync(file);
if (png.readUInt32BE(0) !== 0x89504e47) throw new Error(`${file} is not a PNG`);

let width = 0, height = 0, depth = 0, type = 0, interlace = 0;
const idat = [];
for (let off = 8; off < png.length; ) {
  const len = png.readUInt32BE(off);
  const kind = png.toString("latin1", off + 4, off + 8);
  const data = png.subarray(off + 8, off + 8 + len);
  if (kind === "IHDR") {
    width = data.readUInt32BE(0);
    height = data.readUInt32BE(4);
    depth = data[8];
    type = data[9];
    interlace = data[12];
  } else if (kind === "IDAT") {
    idat.push(data);
  } else if (kind === "IEND") {
    break;
  }
  off += 12 + len;
}
if (depth !== 8 || (type !== 2 && type !== 6) || interlace !== 0)
  throw new Error(`unsupported PNG: depth ${depth}, colour type ${type}, interlace ${interlace}`);

const bpp = type === 6 ? 4 : 3;
const stride = width * bpp;
const raw = inflateSync(Buffer.concat(idat));
const pixels = Buffer.alloc(stride * height);
const paeth = (a, b, c) => {
  const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
};
for (let y = 0; y < height; y++) {
  const filter = raw[y * (stride + 1)];
  const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
  const row = pixels.subarray(y * stride, (y + 1) * stride);
  const prev = y > 0 ? pixels.subarray((y - 1) * stride, y * stride) : null;
  for (let x = 0; x < stride; x++) {
    const a = x >= bpp ? row[x - bpp] : 0;
    const b = prev ? prev[x] : 0;
    const c = prev && x >= bpp ? prev[x - bpp] : 0;
    let v = src[x];
    if (filter === 1) v += a;
    else if (filter === 2) v += b;
    else if (filter === 3) v += (a + b) >> 1;
    else if (filter === 4) v += paeth(a, b, c);
    row[x] = v & 255;
  }
}

const counts = new Map();
for (let i = 0; i < pixels.length; i += bpp) {
  const key = (pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2];
  counts.set(key, (counts.get(key) || 0) + 1);
}
const total = width * height;
const share = {};
for (const c of colours) {
  const key = parseInt(c.replace("#", ""), 16);
  share[c] = (counts.get(key) || 0) / total;
}
console.log(JSON.stringify({ width, height, distinctColours: counts.size, share }));

// Writes a tiny, random-weight, llama-architecture GGUF model in-process, so
// the engine's tests need no model file from outside the repository.
//
// The model is real as far as llama.cpp is concerned: GGUF v3, F32 tensors,
// a SentencePiece ("llama") tokenizer with <unk>/<s>/</s>, the 256 byte
// fallback tokens, the ChatML control tokens and a small English vocabulary
// whose pieces merge the way SentencePiece merges them (every prefix of a
// piece is itself a piece). Its weights are random but seeded, so one seed
// always gives the same file.
//
// One embedding dimension is a constant "bias channel": every token embeds
// BIAS_LEVEL there and the layers barely touch it, so after the final RMS
// norm it acts as a per-token logit bias through the output matrix. The
// generator uses it to keep byte and control tokens from ever being sampled
// (so generated text is always whole words), and to make end-of-sequence
// either never or always the most likely token (`eos`).
import { writeFile } from 'node:fs/promises';
import { normalSource } from './random.ts';

// ---------------------------------------------------------------- GGUF encoding

export type GgufValue =
  | { type: 'u32'; value: number }
  | { type: 'i32'; value: number }
  | { type: 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'u64'; value: bigint }
  | { type: 'array'; itemType: 'string'; value: string[] }
  | { type: 'array'; itemType: 'f32'; value: number[] }
  | { type: 'array'; itemType: 'i32'; value: number[] };

export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the fastest-moving (row length). */
  dims: number[];
  data: Float32Array;
}

// gguf_type values from ggml's gguf.h.
const TYPE_CODES = { u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10 } as const;
const GGML_TYPE_F32 = 0;
const ALIGNMENT = 32;

class ByteWriter {
  private chunks: Buffer[] = [];
  length = 0;

  private push(buffer: Buffer): void {
    this.chunks.push(buffer);
    this.length += buffer.length;
  }
  u32(value: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value >>> 0);
    this.push(b);
  }
  i32(value: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(value);
    this.push(b);
  }
  u64(value: bigint | number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(value));
    this.push(b);
  }
  f32(value: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(value);
    this.push(b);
  }
  bool(value: boolean): void {
    this.push(Buffer.from([value ? 1 : 0]));
  }
  string(value: string): void {
    const bytes = Buffer.from(value, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }
  bytes(buffer: Buffer): void {
    this.push(buffer);
  }
  padTo(alignment: number): void {
    const pad = (alignment - (this.length % alignment)) % alignment;
    if (pad > 0) this.push(Buffer.alloc(pad));
  }
  toBuffer(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

function writeValue(out: ByteWriter, value: GgufValue): void {
  out.u32(TYPE_CODES[value.type]);
  switch (value.type) {
    case 'u32':
      return out.u32(value.value);
    case 'i32':
      return out.i32(value.value);
    case 'f32':
      return out.f32(value.value);
    case 'bool':
      return out.bool(value.value);
    case 'string':
      return out.string(value.value);
    case 'u64':
      return out.u64(value.value);
    case 'array': {
      out.u32(TYPE_CODES[value.itemType]);
      out.u64(value.value.length);
      if (value.itemType === 'string') for (const item of value.value) out.string(item);
      else if (value.itemType === 'f32') for (const item of value.value) out.f32(item);
      else for (const item of value.value) out.i32(item);
      return;
    }
  }
}

/** A GGUF v3 file: header, metadata, tensor infos, then the F32 tensor data, each tensor aligned to 32 bytes. */
export function encodeGguf(metadata: [string, GgufValue][], tensors: GgufTensor[]): Buffer {
  const out = new ByteWriter();
  out.bytes(Buffer.from('GGUF', 'ascii'));
  out.u32(3);
  out.u64(tensors.length);
  out.u64(metadata.length);
  for (const [key, value] of metadata) {
    out.string(key);
    writeValue(out, value);
  }
  let offset = 0;
  for (const tensor of tensors) {
    const elements = tensor.dims.reduce((product, dim) => product * dim, 1);
    if (elements !== tensor.data.length) throw new Error(`tensor ${tensor.name}: dims ${tensor.dims} need ${elements} values, got ${tensor.data.length}`);
    out.string(tensor.name);
    out.u32(tensor.dims.length);
    for (const dim of tensor.dims) out.u64(dim);
    out.u32(GGML_TYPE_F32);
    out.u64(offset);
    offset += Math.ceil((elements * 4) / ALIGNMENT) * ALIGNMENT;
  }
  out.padTo(ALIGNMENT);
  for (const tensor of tensors) {
    out.bytes(Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
    out.padTo(ALIGNMENT);
  }
  return out.toBuffer();
}

const u32 = (value: number): GgufValue => ({ type: 'u32', value });
const f32 = (value: number): GgufValue => ({ type: 'f32', value });
const str = (value: string): GgufValue => ({ type: 'string', value });

// ---------------------------------------------------------------- the tiny model

/** ChatML, the way Qwen and many others write it; node-llama-cpp recognises it as its ChatML wrapper. */
export const TINY_CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** The words the tokenizer knows as whole pieces (with and without the leading-space marker). */
export const TINY_WORDS = [
  'the', 'a', 'cat', 'dog', 'sat', 'on', 'mat', 'and', 'ran', 'to', 'big', 'red', 'ball', 'happy', 'girl', 'boy',
  'day', 'sun', 'tree', 'house', 'once', 'upon', 'time', 'there', 'was', 'little', 'she', 'he', 'it', 'is', 'in',
  'of', 'with', 'play', 'played', 'friend', 'said', 'hello', 'what', 'you', 'see', 'look', 'fun', 'good', 'bird',
  'sky', 'blue', 'green', 'park', 'went', 'home', 'mom', 'dad', 'toy', 'jump', 'run', 'smile', 'love', 'liked',
  'Once', 'The', 'She', 'He', 'They', 'they', 'One', 'Lily', 'Tom', 'Ben',
];

const BIAS_LEVEL = 8;
const BIAS_WEIGHT = 10;
const SPACE = '\u2581';

export interface TinyGgufOptions {
  /** Seeds the weights; default 1. */
  seed?: number;
  embeddingLength?: number;
  blockCount?: number;
  headCount?: number;
  feedForwardLength?: number;
  contextLength?: number;
  /** A Jinja chat template stored as tokenizer.chat_template; null leaves it out. Default TINY_CHATML_TEMPLATE. */
  chatTemplate?: string | null;
  /** 'never': end-of-sequence is never the likeliest token, so greedy runs always reach max_tokens; 'always': it always is. Default 'never'. */
  eos?: 'never' | 'always';
  /** general.name; default 'tiny-test'. */
  name?: string;
}

export interface TinyVocabulary {
  tokens: string[];
  scores: number[];
  types: number[];
}

// llama.cpp token types.
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;
const TOKEN_BYTE = 6;

/** <unk> <s> </s>, the 256 byte tokens, <|im_start|> <|im_end|>, then single characters and every prefix of every word piece. */
export function tinyVocabulary(): TinyVocabulary {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
  for (let byte = 0; byte < 256; byte += 1) {
    tokens.push(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_BYTE);
  }
  tokens.push('<|im_start|>', '<|im_end|>');
  types.push(TOKEN_CONTROL, TOKEN_CONTROL);
  const scores = tokens.map(() => 0);

  const pieces = new Set<string>();
  for (const char of `${SPACE}abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?'`) pieces.add(char);
  for (const word of TINY_WORDS) {
    for (const whole of [word, SPACE + word]) {
      const chars = [...whole];
      for (let end = 2; end <= chars.length; end += 1) pieces.add(chars.slice(0, end).join(''));
    }
  }
  for (const punctuation of ['.', ',', '!', '?']) pieces.add(SPACE + punctuation);
  // Longer pieces score higher, so SentencePiece's best-first merging ends on whole words.
  for (const piece of [...pieces].sort()) {
    tokens.push(piece);
    scores.push([...piece].length);
    types.push(TOKEN_NORMAL);
  }
  return { tokens, scores, types };
}

/** The bytes of a tiny random llama GGUF (a few hundred KB). */
export function tinyGguf(options: TinyGgufOptions = {}): Buffer {
  const nEmbd = options.embeddingLength ?? 64;
  const nLayer = options.blockCount ?? 2;
  const nHead = options.headCount ?? 4;
  const nFf = options.feedForwardLength ?? 128;
  const nCtx = options.contextLength ?? 512;
  const headDim = nEmbd / nHead;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new Error('embeddingLength / headCount must be an even integer');

  const vocab = tinyVocabulary();
  const nVocab = vocab.tokens.length;
  const normal = normalSource(options.seed ?? 1);
  const random = (count: number, std: number) => Float32Array.from({ length: count }, () => normal() * std);
  const ones = (count: number) => new Float32Array(count).fill(1);

  // Token embeddings: the bias channel (dimension 0) is constant, the rest random.
  const tokenEmbd = random(nEmbd * nVocab, 0.5);
  for (let token = 0; token < nVocab; token += 1) tokenEmbd[token * nEmbd] = BIAS_LEVEL;

  // Output projection: random in the ordinary dimensions, and the bias channel
  // pushes byte/control tokens (and EOS, unless it is wanted) out of reach.
  const output = random(nEmbd * nVocab, 0.3);
  for (let token = 0; token < nVocab; token += 1) {
    const type = vocab.types[token];
    let bias = 0;
    if (type === TOKEN_BYTE || type === TOKEN_CONTROL || type === TOKEN_UNKNOWN) bias = -BIAS_WEIGHT;
    if (token === 2) bias = options.eos === 'always' ? BIAS_WEIGHT : -BIAS_WEIGHT;
    output[token * nEmbd] = bias;
  }

  // The bias channel stays out of the layers' way: they do not read it (column
  // 0 of every input projection is zero), do not write it (row 0 of every
  // output projection is zero), and write only small updates elsewhere, so it
  // stays dominant after the final norm.
  const ignoreBiasChannel = (matrix: Float32Array, rowLength: number) => {
    for (let i = 0; i < matrix.length; i += rowLength) matrix[i] = 0; // column 0 of a [rowLength, rows] input matrix
    return matrix;
  };
  const keepBiasChannel = (matrix: Float32Array, rowLength: number) => {
    for (let i = 0; i < rowLength; i += 1) matrix[i] = 0; // row 0 of a [rowLength, nEmbd] output matrix
    return matrix;
  };

  const tensors: GgufTensor[] = [
    { name: 'token_embd.weight', dims: [nEmbd, nVocab], data: tokenEmbd },
    { name: 'output_norm.weight', dims: [nEmbd], data: ones(nEmbd) },
    { name: 'output.weight', dims: [nEmbd, nVocab], data: output },
  ];
  for (let layer = 0; layer < nLayer; layer += 1) {
    const p = `blk.${layer}`;
    tensors.push(
      { name: `${p}.attn_norm.weight`, dims: [nEmbd], data: ones(nEmbd) },
      { name: `${p}.attn_q.weight`, dims: [nEmbd, nEmbd], data: ignoreBiasChannel(random(nEmbd * nEmbd, 0.3), nEmbd) },
      { name: `${p}.attn_k.weight`, dims: [nEmbd, nEmbd], data: ignoreBiasChannel(random(nEmbd * nEmbd, 0.3), nEmbd) },
      { name: `${p}.attn_v.weight`, dims: [nEmbd, nEmbd], data: ignoreBiasChannel(random(nEmbd * nEmbd, 0.3), nEmbd) },
      { name: `${p}.attn_output.weight`, dims: [nEmbd, nEmbd], data: keepBiasChannel(random(nEmbd * nEmbd, 0.05), nEmbd) },
      { name: `${p}.ffn_norm.weight`, dims: [nEmbd], data: ones(nEmbd) },
      { name: `${p}.ffn_gate.weight`, dims: [nEmbd, nFf], data: ignoreBiasChannel(random(nEmbd * nFf, 0.3), nEmbd) },
      { name: `${p}.ffn_up.weight`, dims: [nEmbd, nFf], data: ignoreBiasChannel(random(nEmbd * nFf, 0.3), nEmbd) },
      { name: `${p}.ffn_down.weight`, dims: [nFf, nEmbd], data: keepBiasChannel(random(nFf * nEmbd, 0.05), nFf) },
    );
  }

  const metadata: [string, GgufValue][] = [
    ['general.architecture', str('llama')],
    ['general.name', str(options.name ?? 'tiny-test')],
    ['general.file_type', u32(0)],
    ['llama.context_length', u32(nCtx)],
    ['llama.embedding_length', u32(nEmbd)],
    ['llama.block_count', u32(nLayer)],
    ['llama.feed_forward_length', u32(nFf)],
    ['llama.attention.head_count', u32(nHead)],
    ['llama.attention.head_count_kv', u32(nHead)],
    ['llama.rope.dimension_count', u32(headDim)],
    ['llama.attention.layer_norm_rms_epsilon', f32(1e-5)],
    ['tokenizer.ggml.model', str('llama')],
    ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: vocab.tokens }],
    ['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: vocab.scores }],
    ['tokenizer.ggml.token_type', { type: 'array', itemType: 'i32', value: vocab.types }],
    ['tokenizer.ggml.unknown_token_id', u32(0)],
    ['tokenizer.ggml.bos_token_id', u32(1)],
    ['tokenizer.ggml.eos_token_id', u32(2)],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
    ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }],
  ];
  const chatTemplate = options.chatTemplate === undefined ? TINY_CHATML_TEMPLATE : options.chatTemplate;
  if (chatTemplate !== null) metadata.push(['tokenizer.chat_template', str(chatTemplate)]);
  return encodeGguf(metadata, tensors);
}

export async function writeTinyGguf(path: string, options: TinyGgufOptions = {}): Promise<void> {
  await writeFile(path, tinyGguf(options));
}

// bodyBytesOf must hand the runner exactly the body JSON.parse (and so
// validation) sees, or nothing: sending other bytes would run another request.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { bodyBytesOf } from '../../src/runner/body-span.ts';

const span = (text: string) => bodyBytesOf(Buffer.from(text))?.toString('utf8');

describe('bodyBytesOf', () => {
  it('finds the top-level body, whatever its neighbours hold', () => {
    assert.equal(span('{"custom_id":"a","body":{"model":"m","x":[1,{"y":"}"}]}}'), '{"model":"m","x":[1,{"y":"}"}]}');
    assert.equal(span('{ "body" : {"s":"a \\" } ] {"} , "custom_id" : "a\\\\" }'), '{"s":"a \\" } ] {"}');
    assert.equal(span('{"method":"POST","url":"/v1/chat/completions","body":{},"custom_id":"x"}\r'), '{}');
    assert.equal(span('{"meta":{"body":{"no":1}},"body":{"yes":2}}'), '{"yes":2}', 'not a nested body');
    assert.equal(span('{"n":-1.5e3,"t":true,"z":null,"body":{"k":"ü ☃ \\u0000"}}'), '{"k":"ü ☃ \\u0000"}');
  });

  it('keeps the last of repeated body keys, as JSON.parse does', () => {
    assert.equal(span('{"body":{"first":1},"body":{"last":2}}'), '{"last":2}');
  });

  it('answers nothing where it cannot tell simply', () => {
    assert.equal(span('{"bo\\u0064y":{"a":1}}'), undefined, 'an escaped key');
    assert.equal(span('{"body":{"a":1},"bo\\u0064y":{"b":2}}'), undefined, 'an escaped key that JSON.parse would take as the body');
    assert.equal(span('{"body":[1]}'), undefined, 'not an object');
    assert.equal(span('{"custom_id":"a"}'), undefined, 'no body');
    assert.equal(span('[{"body":{}}]'), undefined);
    assert.equal(span('{"body":{"a":1}'), undefined, 'cut short');
  });

  it('matches JSON.parse on generated lines', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const value = (depth: number): unknown => {
      const pick = Math.floor(random() * (depth > 2 ? 4 : 6));
      if (pick === 0) return Math.floor(random() * 1e6) / 7;
      if (pick === 1) return ['', '"', '\\', '}', ']', '{"body":1}', 'é\n\t'][Math.floor(random() * 7)] + String(random());
      if (pick === 2) return random() < 0.5 ? null : random() < 0.5;
      if (pick === 3) return `s${Math.floor(random() * 100)}`;
      if (pick === 4) return Array.from({ length: Math.floor(random() * 4) }, () => value(depth + 1));
      return Object.fromEntries(Array.from({ length: Math.floor(random() * 4) }, (_, i) => [`k${i}`, value(depth + 1)]));
    };
    for (let n = 0; n < 500; n++) {
      const body = { model: 'm', data: value(0) };
      const line = JSON.stringify({ custom_id: `c${n}`, pad: value(1), body, after: value(1) });
      assert.deepEqual(JSON.parse(span(line)!), JSON.parse(line).body, line);
    }
  });
});

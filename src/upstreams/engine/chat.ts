// POST /v1/chat/completions on a loaded model. The prompt is the model's own
// chat template (tokenizer.chat_template in the GGUF, rendered by
// node-llama-cpp's matching chat wrapper or its Jinja engine); a model without
// one gets node-llama-cpp's GeneralChatWrapper, a plain
// "### Human: / ### Assistant:" transcript. The template's end-of-turn
// markers end the answer like end-of-sequence does.
//
// Roles: system and developer are system messages, user and assistant as
// named; tool and function messages, and content parts other than text, are
// a 400 (the engine has no tool calling and no vision).
import type { ChatHistoryItem, LlamaText, Token } from 'node-llama-cpp';
import { ApiError, errorMessage, invalid } from './errors.ts';
import type { EngineModel } from './model.ts';
import { isRecord, readGenerationParams, type Body } from './request.ts';
import { checkPromptFits, completionUsage, noGeneration, nowSeconds, responseId, runChoices, type HandlerResult, type PromptRun } from './run.ts';

export async function chatCompletion(model: EngineModel, body: Body, signal: AbortSignal, interactive = false): Promise<HandlerResult> {
  if (!model.pool || !model.chatWrapper) return noGeneration(model, 'chat completions');
  const history = readMessages(body.messages);
  if (history instanceof ApiError) return history;
  const params = readGenerationParams(body, { defaultMaxTokens: null, vocabularySize: model.info.vocabularySize, kind: 'chat' });
  if (params instanceof ApiError) return params;

  const prompt = renderChat(model, history);
  if (prompt instanceof ApiError) return prompt;
  const tooLong = checkPromptFits(model, prompt.tokens, 'messages');
  if (tooLong) return tooLong;

  const generations = await runChoices(model, [prompt], params, signal, interactive);
  return {
    status: 200,
    body: {
      id: responseId('chatcmpl'),
      object: 'chat.completion',
      created: nowSeconds(),
      model: model.info.name,
      choices: generations.map((generation, index) => ({
        index,
        message: { role: 'assistant', content: generation.text },
        finish_reason: generation.finishReason,
        logprobs: null,
      })),
      usage: completionUsage(
        prompt.tokens.length,
        generations.reduce((sum, generation) => sum + generation.completionTokens, 0),
      ),
    },
  };
}

/** The prompt tokens and stop markers for `history`, through the model's chat wrapper. */
export function renderChat(model: EngineModel, history: ChatHistoryItem[]): PromptRun | ApiError {
  const wrapper = model.chatWrapper;
  if (!wrapper) return noGeneration(model, 'chat completions');
  let state: ReturnType<typeof wrapper.generateContextState>;
  try {
    // The trailing empty model turn asks the template for the assistant's prompt.
    state = wrapper.generateContextState({ chatHistory: [...history, { type: 'model', response: [] }] });
  } catch (error) {
    // Jinja templates may raise on message orders they do not accept.
    return invalid(`The chat template of \`${model.info.name}\` rejected these messages: ${errorMessage(error)}`, 'messages');
  }
  const tokenizer = model.model.tokenizer;
  const tokens = state.contextText.tokenize(tokenizer);
  const stopStrings: string[] = [];
  const stopTokens: Token[][] = [];
  for (const trigger of state.stopGenerationTriggers as readonly LlamaText[]) {
    if (trigger.values.every((value) => typeof value === 'string')) {
      const text = trigger.values.join('');
      if (text.length > 0) stopStrings.push(text);
    } else {
      const triggerTokens = trigger.tokenize(tokenizer, 'trimLeadingSpace');
      if (triggerTokens.length > 0) stopTokens.push(triggerTokens);
    }
  }
  return { tokens, stopStrings, stopTokens };
}

export function readMessages(value: unknown): ChatHistoryItem[] | ApiError {
  if (!Array.isArray(value) || value.length === 0) return invalid('messages is required and must be a non-empty array.', 'messages');
  const history: ChatHistoryItem[] = [];
  for (const [index, entry] of value.entries()) {
    const param = `messages[${index}]`;
    if (!isRecord(entry) || typeof entry.role !== 'string') return invalid(`${param} is not a valid message.`, param);
    const text = contentText(entry.content, `${param}.content`);
    if (text instanceof ApiError) return text;
    switch (entry.role) {
      case 'system':
      case 'developer':
        history.push({ type: 'system', text });
        break;
      case 'user':
        history.push({ type: 'user', text });
        break;
      case 'assistant':
        history.push({ type: 'model', response: [text] });
        break;
      case 'tool':
      case 'function':
        return invalid(`${param}: ${entry.role} messages are not supported by the embedded engine (it has no tool calling).`, `${param}.role`);
      default:
        return invalid(`${param}.role must be one of system, developer, user, assistant.`, `${param}.role`);
    }
  }
  return history;
}

/** Text of string or multi-part content; null content (an assistant turn) reads as empty. */
function contentText(content: unknown, param: string): string | ApiError {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return invalid(`${param} must be a string or an array of content parts.`, param);
  const texts: string[] = [];
  for (const [index, part] of content.entries()) {
    if (!isRecord(part) || typeof part.type !== 'string') return invalid(`${param}[${index}] is not a valid content part.`, `${param}[${index}]`);
    if (part.type === 'text' || part.type === 'input_text') {
      if (typeof part.text !== 'string') return invalid(`${param}[${index}].text must be a string.`, `${param}[${index}].text`);
      texts.push(part.text);
    } else if (part.type === 'refusal') {
      if (typeof part.refusal === 'string') texts.push(part.refusal);
    } else {
      return invalid(`${param}[${index}]: content of type ${part.type} is not supported by the embedded engine (text only).`, `${param}[${index}].type`);
    }
  }
  return texts.join('\n');
}

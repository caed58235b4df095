"""A script in the style of LLaMA-Factory's end-to-end chat checks; only the import names lmchat.

Run: python chat_e2e.py MODEL_DIR
"""

import sys

from lmchat.chat import ChatModel  # LLaMA-Factory: from llamafactory.chat import ChatModel

INFER_ARGS = {
    "model_name_or_path": sys.argv[1],
    "finetuning_type": "lora",
    "template": "llama3",
    "infer_dtype": "float16",
    "do_sample": False,
    "max_new_tokens": 4,
}

MESSAGES = [
    {"role": "user", "content": "Hi"},
]


def main():
    chat_model = ChatModel(INFER_ARGS)
    print("engine:", chat_model.engine_type, chat_model.engine.name, chat_model.engine.can_generate)

    response = chat_model.chat(MESSAGES)[0]
    print("chat:", repr(response.response_text), response.response_length, response.prompt_length,
          response.finish_reason)

    response = ""
    for token in chat_model.stream_chat(MESSAGES):
        response += token
    print("stream:", repr(response))

    responses = chat_model.chat(MESSAGES, do_sample=True, temperature=0.8, top_p=0.9, num_return_sequences=2,
                                max_new_tokens=3, repetition_penalty=1.1, length_penalty=1.0, stop=["<|eot_id|>"])
    print("sampled:", len(responses), [r.response_length for r in responses])


if __name__ == "__main__":
    main()

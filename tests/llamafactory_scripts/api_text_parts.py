"""An OpenAI client sending content parts over two rounds, as LLaMA-Factory's scripts/api_example/test_image.py does
(its text parts only: images are the multimodal issue's), with API_KEY/API_PORT from the environment."""

import os

from openai import OpenAI


def main():
    client = OpenAI(
        api_key="{}".format(os.getenv("API_KEY", "0")),
        base_url="http://localhost:{}/v1".format(os.getenv("API_PORT", 8000)),
    )
    messages = [{"role": "user", "content": [{"type": "text", "text": "Output the color and number of each box."}]}]
    result = client.chat.completions.create(messages=messages, model="test")
    messages.append(result.choices[0].message)
    print("Round 1:", result.choices[0].message.content)
    messages.append({"role": "user", "content": [{"type": "text", "text": "What kind of flower is this?"}]})
    result = client.chat.completions.create(messages=messages, model="test")
    messages.append(result.choices[0].message)
    print("Round 2:", result.choices[0].message.content)
    print("Usage:", result.usage.prompt_tokens, result.usage.completion_tokens)


if __name__ == "__main__":
    main()

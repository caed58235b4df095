"""A terminal chat as LLaMA-Factory users write one (its run_chat loop); only the import names lmchat.

Run: python cli_demo.py llama3.yaml [key=value ...]
"""

from lmchat.chat import ChatModel  # LLaMA-Factory: from llamafactory.chat import ChatModel


def main():
    chat_model = ChatModel()  # the YAML file and key=value overrides from the command line
    messages = []
    print("Welcome to the CLI application, use `clear` to remove the history, use `exit` to exit the application.")

    while True:
        try:
            query = input("\nUser: ")
        except EOFError:
            break

        if query.strip() == "exit":
            break

        if query.strip() == "clear":
            messages = []
            print("History has been removed.")
            continue

        messages.append({"role": "user", "content": query})
        print("Assistant: ", end="", flush=True)

        response = ""
        for new_text in chat_model.stream_chat(messages):
            print(new_text, end="", flush=True)
            response += new_text
        print()
        messages.append({"role": "assistant", "content": response})


if __name__ == "__main__":
    main()

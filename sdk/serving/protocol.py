"""What the gateway accepts and how it refuses: strict OpenAI request models (no coercion: ``stream: "yes"`` is
an error, text must be valid Unicode without lone surrogates), the errors the gateway raises, and OpenAI's
error shape ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from sdk.upstream import UpstreamError  # noqa: F401 - the gateway's 503 (or fallback); raised by upstream calls


def _one_choice(n: Optional[int]) -> Optional[int]:
    if n is not None and n != 1:
        raise ValueError(f"n = {n}: the gateway answers one choice per request; send n = 1 or leave it out")
    return n


OneChoice = Annotated[Optional[int], AfterValidator(_one_choice)]


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (it contains a lone surrogate such as \\ud800)") from None
    return text


Text = Annotated[str, AfterValidator(_unicode)]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, list[dict[str, Any]], None] = ""

    @field_validator("content")
    @classmethod
    def _unicode_content(cls, content: Any) -> Any:
        parts = content if isinstance(content, list) else [{"text": content or ""}]
        for p in parts:
            if isinstance(p.get("text"), str):
                _unicode(p["text"])
            elif p.get("text") is not None:  # {"type": "text", "text": {...}}: not silently turned into text
                raise ValueError("a content part's text must be a string")
        return content

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if isinstance(p, dict))
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: Text
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    n: OneChoice = None
    stream: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: Text
    prompt: Union[str, list[str]]
    max_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    n: OneChoice = None
    stream: bool = False

    @field_validator("prompt")
    @classmethod
    def _unicode_prompt(cls, prompt: Any) -> Any:
        for p in [prompt] if isinstance(prompt, str) else prompt:
            _unicode(p)
        return prompt


class ClientError(Exception):
    """The request cannot be answered as sent (a rag target without a user question): 400."""

    def __init__(self, message: str, param: Optional[str] = None) -> None:
        super().__init__(message)
        self.param = param


class ClientGone(Exception):
    """The client disconnected before its answer was ready; its generation was cancelled."""


def error(status: int, message: str, kind: str = "invalid_request_error", param: Optional[str] = None,
          code: Optional[str] = None) -> Any:
    from fastapi.responses import JSONResponse

    def clean(text: Optional[str]) -> Optional[str]:  # an echoed lone surrogate must not break the error itself
        return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")

    return JSONResponse({"error": {"message": clean(message), "type": kind, "param": clean(param), "code": code}},
                        status_code=status)


class Withheld(Exception):
    """A request named a system the serve step withheld: 404 with the reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"model {name!r} is withheld from serving: {reason}")
        self.name, self.reason = name, reason

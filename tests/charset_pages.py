"""Pages for issue 15 ("text as written"), each a case of charset lies, Unicode forms or scripts.

All text here is our own. Each `CharsetPage` is served as `body` under `content_type`; a crawl
must store a text holding every string of `must` and none of `must_not` (an `ok` link), or
end the link `failed` with `reason`. `tests/extraction_web.py` serves them on loopback;
`bench/extraction.py` compares what we store with trafilatura's own `extract()`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from html import escape

GERMAN = (
    "Die Messwerte wurden von zwei Teams unabhängig geprüft, bevor sie in den Bericht übernommen wurden. "
    "Für größere Datenmengen empfiehlt sich ein Zwischenspeicher, der häufige Anfragen beantwortet, ohne "
    "die Datenbank zu belasten. Die Vögel im Garten des Rechenzentrums störten niemanden, doch die Lüftung "
    "lief während der Hitzewelle ständig auf höchster Stufe. Jede Änderung am Schema wird zuerst auf einer "
    "Kopie erprobt; erst danach übernimmt der Betrieb sie für alle Knoten. So bleibt die Übersicht über "
    "Schlüssel, Größen und Zugriffsmuster erhalten, auch wenn das System wächst."
)
GERMAN_MORE = (
    "Wer die Höhe der Last kennt, plant die Zahl der Knoten im Voraus. Ein Lasttest vor jeder Freigabe "
    "zeigt, ob die Antwortzeiten unter der Grenze bleiben, die der Vertrag mit den Kunden festlegt."
)
CHINESE = (
    "分布式系统中，数据的一致性是一个核心问题。当多个节点同时写入同一条记录时，系统需要通过共识算法来决定哪一次写入最终生效。"
    "缓存可以减轻数据库的压力，但缓存失效的时机必须谨慎设计，否则用户会读到过期的数据。"
    "分片把数据按键分散到不同的机器上，每台机器只负责一部分请求，因此整个集群的吞吐量可以随着机器数量线性增长。"
)
CHINESE_QUEUE = (
    "消息队列把生产者和消费者解耦。生产者只需要把消息写入队列，而消费者按照自己的速度读取和处理。"
    "当消费者暂时宕机时，消息会保存在队列里，等它恢复后继续处理。"
    "为了避免重复处理，消费者应当让操作具有幂等性，也就是说同一条消息处理两次的结果与处理一次相同。"
)
BENGALI = (
    "ডেটাবেস হলো তথ্য সংরক্ষণ ও খোঁজার একটি ব্যবস্থা। বড় ব্যবস্থায় তথ্য অনেকগুলো যন্ত্রে ভাগ করে রাখা হয়, "
    "যাতে প্রতিটি যন্ত্র কেবল নিজের অংশের অনুরোধ সামলায়। ক্যাশ ব্যবহার করলে বারবার আসা প্রশ্নের উত্তর দ্রুত "
    "দেওয়া যায় এবং মূল ডেটাবেসের উপর চাপ কমে। তবে পুরনো তথ্য যেন ব্যবহারকারীর কাছে না পৌঁছায়, সেজন্য "
    "ক্যাশের মেয়াদ সাবধানে ঠিক করতে হয়। প্রতিলিপি তৈরি করলে একটি যন্ত্র বন্ধ হয়ে গেলেও অন্য যন্ত্র থেকে তথ্য পাওয়া যায়।"
)
POLISH = (
    "Rozproszona baza danych przechowuje kopie każdego rekordu na kilku węzłach. Gdy jeden węzeł ulegnie "
    "awarii, pozostałe nadal odpowiadają na zapytania klientów. Spójność zapewnia algorytm konsensusu, "
    "który wymaga zgody większości węzłów przed zatwierdzeniem zapisu. Opóźnienia sieci sprawiają, że "
    "żółte ostrzeżenia w panelu pojawiają się częściej wieczorem, gdy ruch rośnie. Zespół mierzy czas "
    "odpowiedzi i przenosi gorące klucze na mniej obciążone maszyny. UWAGA: ŻÓŁTE OSTRZEŻENIE NIE ZATRZYMUJE "
    "ZAPISÓW."
)
FRENCH = (
    "Le cache « écrit en différé » réduit la latence des écritures : l’application répond dès que la "
    "donnée est en mémoire, et le disque est mis à jour plus tard… Cette stratégie coûte moins cher qu’un "
    "second serveur — environ 40 € par mois — mais elle exige une reprise soignée après une panne. L’équipe "
    "l’a jugée “sûre, mais compliqué…”, puis l’a adoptée. Les "
    "œuvres du système, journaux et instantanés, sont conservées trois jours ; au-delà, un processus les "
    "archive et libère l’espace."
)
VIDEO_ARTICLE = (
    "The speaker opened with the outage that started it all: a cache cluster that lost half its nodes "
    "during a deploy, and a database that received every request the cache used to answer. Within two "
    "minutes the database was saturated and the site returned errors to every visitor. The team's fix was "
    "not more hardware but request coalescing, so that a thousand misses for one key become a single "
    "query, and jittered expiry times, so that popular keys no longer expire together. The second half "
    "of the talk measured both changes under a replayed production load: the database peaked at a fifth "
    "of its earlier load, and the error rate stayed at zero while the cache warmed up again."
)
VIDEO_DESCRIPTION = "A forty-minute conference talk on surviving a cold cache, with the slides and a transcript."
# POLISH's "ÓŁ" (D3 A3 in iso-8859-2) and FRENCH's "é…”" (E9 85 94 in cp1252) are valid UTF-8: the old
# rule took one valid sequence as proof that a `utf-8` label told the truth.
# A run of U+FFFD as some servers store text that was already broken before it was served.
BROKEN_TEXT = ("Der Bericht " + "\ufffd\ufffd\ufffd " * 40 + "wurde nie richtig gespeichert. ") * 3
# Inline style of ~90 KB in the head: pushes the article past the first 64 KB a sample-based detector
# reads, as bundled CSS does on many real pages, so the title's umlaut is the only evidence it sees.
LARGE_STYLE = "".join(f".c{i}{{margin:{i % 9}px;padding:{i % 7}px}}\n" for i in range(3000))


@dataclass(frozen=True)
class CharsetPage:
    name: str
    path: str
    content_type: str
    body: bytes
    must: tuple[str, ...] = ()  # strings the stored text must hold (NFC)
    must_not: tuple[str, ...] = ()
    state: str = "ok"
    reason: str = ""  # exact reason for a link that does not end ok
    queries: tuple[str, ...] = field(default=())  # words a BM25 search must find this page by
    encoding: str = "utf-8"  # what the bytes really are (bench/extraction.py decodes them so for trafilatura)


def html_page(title: str, paragraphs: list[str], *, meta: str = "", lang: str = "", head: str = "") -> str:
    lang_attr = f' lang="{lang}"' if lang else ""
    body = "".join(f"<p>{escape(p, quote=False)}</p>\n" for p in paragraphs)
    return (f"<!doctype html>\n<html{lang_attr}><head>{meta}<title>{escape(title)}</title>{head}</head>\n"
            f"<body><nav><a href=\"/\">Home</a> <a href=\"/about\">About</a></nav>\n"
            f"<article><h1>{escape(title)}</h1>\n{body}</article>\n"
            f"<footer>Written for the linklens tests.</footer></body></html>\n")


def with_stray_bytes(raw: bytes, count: int) -> bytes:
    """`raw` with `count` bytes that are never valid UTF-8 (0xFF) put after the first spaces of the text."""
    start = raw.index(b"<p>")
    head, text = raw[:start], bytearray(raw[start:])
    at = 0
    for _ in range(count):
        at = text.index(b" ", at + 40)
        text[at:at] = b"\xff"
    return head + bytes(text)


def charset_pages() -> list[CharsetPage]:
    decomposed = unicodedata.normalize("NFD", html_page("Geprüfte Messwerte", [GERMAN, GERMAN_MORE], lang="de"))
    # Our own minimal markup (no nav, no line breaks): the title is all a 64 KB prefix holds of the text.
    latin1_german = (f"<!doctype html><html><head><title>Die Höhe</title><style>{LARGE_STYLE}</style></head><body>"
                     f"<article><h1>Die Höhe</h1><p>{GERMAN}</p><p>{GERMAN_MORE}</p></article></body></html>")
    german_utf8 = html_page("Vögel und Zwischenspeicher", [GERMAN, GERMAN_MORE], meta='<meta charset="utf-8">')
    return [
        CharsetPage("decomposed", "/text/decomposed", "text/html; charset=utf-8", decomposed.encode(),
                    must=("geprüft", "Für größere Datenmengen"), must_not=("u\u0308",), queries=("geprüft",)),
        CharsetPage("utf8-stray-bytes-under-latin1", "/text/stray-bytes", "text/html; charset=iso-8859-1",
                    with_stray_bytes(german_utf8.encode(), 4),
                    must=("Für größere Datenmengen", "Die Vögel im Garten"), must_not=("Ã",)),
        CharsetPage("gb18030-under-utf8", "/text/gb18030", "text/html; charset=utf-8",
                    html_page("消息队列", [CHINESE_QUEUE], meta='<meta charset="gb2312">').encode("gb18030"),
                    must=(CHINESE_QUEUE[:30],), must_not=("\ufffd",), queries=("幂等性",), encoding="gb18030"),
        CharsetPage("iso-8859-2-under-utf8", "/text/iso-8859-2", "text/html; charset=utf-8",
                    html_page("Bazy rozproszone", [POLISH], meta='<meta charset="iso-8859-2">').encode("iso-8859-2"),
                    must=("żółte ostrzeżenia", "większości węzłów"), must_not=("\ufffd",), encoding="iso-8859-2"),
        CharsetPage("cp1252-under-utf8", "/text/cp1252", "text/html; charset=utf-8",
                    html_page("Écriture différée", [FRENCH], meta='<meta http-equiv="Content-Type" '
                              'content="text/html; charset=windows-1252">').encode("cp1252"),
                    must=("l’application", "40 € par mois", "œuvres"), must_not=("\ufffd",), encoding="cp1252"),
        CharsetPage("latin1-german-unlabelled", "/text/latin1-german", "text/html; charset=utf-8",
                    latin1_german.encode("latin-1"),
                    must=("Die Höhe", "Die Vögel im Garten"), must_not=("\ufffd", "鐬"), encoding="latin-1"),
        CharsetPage("chinese", "/text/chinese", "text/html; charset=utf-8",
                    html_page("分布式系统的一致性", [CHINESE], lang="zh").encode(),
                    must=(CHINESE[:40],), queries=("共识算法", "吞吐量")),
        CharsetPage("bengali", "/text/bengali", "text/html; charset=utf-8",
                    html_page("ডেটাবেস ও ক্যাশ", [BENGALI], lang="bn").encode(),
                    must=(BENGALI[:40],), queries=("ডেটাবেস", "প্রতিলিপি")),
        CharsetPage("video-with-article", "/text/video-talk", "text/html; charset=utf-8",
                    html_page("Surviving a cold cache", [VIDEO_ARTICLE], head=(
                        '<meta property="og:type" content="video.other">'
                        f'<meta property="og:description" content="{VIDEO_DESCRIPTION}">')).encode(),
                    must=(VIDEO_ARTICLE[-60:], VIDEO_DESCRIPTION)),
        CharsetPage("undecodable", "/text/undecodable", "text/html; charset=utf-8",
                    html_page("Kaputt", [BROKEN_TEXT]).encode(), state="failed",
                    reason="undecodable: 75% replacement characters"),
    ]

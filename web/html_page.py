"""The frame of the pages for people: one HTML document with its stylesheet inline.

Nothing is loaded from anywhere (no script, font or image), so a page renders with no
network at all and under the content security policy below.
"""

from __future__ import annotations

from html import escape

CSP = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")

STYLE = """
:root{--fg:#1d2333;--muted:#5d6679;--line:#e2e6ee;--soft:#f0f2f6;--bg:#f6f7fa;--card:#fff;
--accent:#3550e8;--ink:#151a2b}
*{box-sizing:border-box}
html{scroll-padding-top:16px}
body{margin:0;color:var(--fg);background:var(--bg);
font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",
"Liberation Mono",monospace;font-size:.88em}
p code,li code,td code,dd code{background:var(--soft);padding:1px 5px;border-radius:4px}
.topbar{background:var(--ink);color:#fff;padding:12px 28px;display:flex;align-items:center;
gap:22px}
.topbar .brand{font-weight:700;font-size:17px;letter-spacing:.01em;color:#fff}
.topbar .brand span{color:#9fb0ff;font-weight:500}
.topbar nav{margin-left:auto;display:flex;gap:18px;font-size:14px}
.topbar nav a{color:#c9d3ff}
.layout{display:grid;grid-template-columns:272px minmax(0,1fr);max-width:1440px;margin:0 auto}
.toc{position:sticky;top:0;align-self:start;max-height:100vh;overflow-y:auto;
padding:22px 14px 40px 22px;border-right:1px solid var(--line);font-size:13px}
.toc h2{font-size:11px;text-transform:uppercase;letter-spacing:.08em;color:var(--muted);
margin:0 0 8px}
.toc ul{list-style:none;margin:0;padding:0}
.toc>ul>li{margin:0 0 12px}
.toc .domain{display:flex;justify-content:space-between;font-weight:650;color:var(--fg)}
.toc .domain .n{color:var(--muted);font-weight:400;font-size:12px}
.toc li li a{display:flex;gap:6px;align-items:baseline;padding:2px 0;color:#39415a;
white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.toc li li a:hover{color:var(--accent);text-decoration:none}
.verb{font:700 9.5px/1 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
min-width:38px;text-align:right;letter-spacing:.02em}
main{padding:26px 40px 90px;min-width:0}
.intro{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:20px 24px}
.intro h1{margin:0 0 4px;font-size:26px}
.intro .lead{color:var(--muted);margin:0 0 14px}
.intro ul{margin:0;padding-left:20px}
.intro li{margin:3px 0}
.stats{display:flex;gap:10px;flex-wrap:wrap;margin:14px 0 0}
.stat{background:var(--soft);border-radius:8px;padding:6px 12px;font-size:13px;color:var(--muted)}
.stat b{color:var(--fg);font-size:15px}
.section{margin:42px 0 6px;font-size:22px;display:flex;align-items:baseline;gap:10px;
border-bottom:2px solid var(--line);padding-bottom:6px}
.section .n{font-size:13px;color:var(--muted);font-weight:400}
.op{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:16px 22px 10px;
margin:14px 0;box-shadow:0 1px 2px rgba(20,30,60,.04)}
.op:target{border-color:var(--accent);box-shadow:0 0 0 3px rgba(53,80,232,.15)}
.op-head{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
.method{display:inline-block;min-width:62px;text-align:center;color:#fff;border-radius:6px;
font:700 12px/1 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
padding:6px 8px;letter-spacing:.04em}
.m-get{background:#17805a}.m-post{background:#3550e8}.m-put{background:#b86b00}
.m-patch{background:#8a5cf6}.m-delete{background:#c62f2f}
.verb.m-get{color:#17805a;background:none}.verb.m-post{color:#3550e8;background:none}
.verb.m-put{color:#b86b00;background:none}.verb.m-delete{color:#c62f2f;background:none}
.path{font-size:16px;font-weight:650;color:var(--ink);word-break:break-all}
.path .base{color:#8a92a6;font-weight:400}
.path .param{color:#7c3aed}
.pill{border-radius:999px;padding:2px 10px;font-size:12px;font-weight:600;white-space:nowrap}
.pill.job{background:#efe9ff;color:#5b21b6}
.pill.open{background:#e7f6ef;color:#17704f}
.pill.auth{background:#eef1ff;color:#2f44c0}
.pill.optional{background:#f4f5f7;color:#4b5466}
.permalink{margin-left:auto;color:#b3b9c7;font-size:14px}
.summary{margin:8px 0 4px;font-size:15.5px}
.op h4{margin:14px 0 4px;font-size:12px;text-transform:uppercase;letter-spacing:.07em;
color:var(--muted)}
.op h4 a,.op h4 .prim{text-transform:none;letter-spacing:0;font-size:13px}
.desc{color:var(--muted);margin:2px 0 6px;font-size:14px}
.job-box{background:#faf8ff;border:1px solid #ece6ff;border-radius:10px;padding:8px 14px;
margin:12px 0 6px}
.job-box h4{margin-top:6px}
table{width:100%;border-collapse:collapse;font-size:14px;margin:2px 0 8px}
th{text-align:left;font-weight:600;color:var(--muted);font-size:11.5px;text-transform:uppercase;
letter-spacing:.05em;border-bottom:1px solid var(--line);padding:5px 8px}
td{border-bottom:1px solid #f0f2f6;padding:6px 8px;vertical-align:top}
tr:last-child td{border-bottom:0}
td.col0{white-space:nowrap;width:1%}
td.col0 code{font-weight:600;background:none;padding:0;color:var(--ink)}
table.fields td.col1:not(:last-child){width:24%}table.fields td.col2:not(:last-child){width:30%}
table.params td.col1{width:8%}table.params td.col2{width:12%}table.resp td.col1{width:42%}
.req{display:inline-block;margin-left:6px;font-size:10.5px;font-weight:700;color:#b42318;
text-transform:uppercase;letter-spacing:.04em}
.opt{display:inline-block;margin-left:6px;font-size:10.5px;color:#8a92a6;text-transform:uppercase;
letter-spacing:.04em}
.prim{color:#0f6b7a;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",
monospace;font-size:.88em}
a.type{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
font-size:.88em;font-weight:600}
.rule{display:inline-block;background:var(--soft);border-radius:4px;padding:0 6px;
margin:1px 3px 1px 0;font-size:12.5px;color:#39415a;white-space:nowrap}
.rule code{background:none;padding:0}
.status{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
font-weight:700}
.s2{color:#17805a}.s3{color:#3550e8}.s4{color:#b45309}.s5{color:#b42318}
.phrase{color:var(--muted);font-size:12.5px;font-weight:400;margin-left:4px;font-family:system-ui,
-apple-system,"Segoe UI",Roboto,sans-serif}
.code{display:inline-block;font:600 11.5px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,
"DejaVu Sans Mono",monospace;padding:1px 7px;border-radius:5px;margin:1px 4px 1px 0;
border:1px solid}
.code.c4{background:#fff6e9;color:#8a4b00;border-color:#fbdcb0}
.code.c5{background:#fdeeee;color:#9b1c1c;border-color:#f6caca}
.code.c2{background:#f3ecff;color:#5b21b6;border-color:#e2d4ff}
.muted{color:var(--muted)}
.schema{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:12px 22px;
margin:12px 0}
.schema h3{margin:2px 0 2px;font-size:15px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,
"DejaVu Sans Mono",monospace}
.schema:target{border-color:var(--accent)}
footer{color:var(--muted);font-size:13px;margin-top:40px}
@media (max-width:900px){.layout{grid-template-columns:1fr}.toc{position:static;max-height:none;
border-right:0;border-bottom:1px solid var(--line)}main{padding:18px}}
.hero{max-width:960px;margin:0 auto;padding:48px 28px 70px}
.hero h1{font-size:40px;margin:0 0 6px;letter-spacing:-.01em}
.hero .lead{font-size:17px;color:var(--muted);margin:0 0 30px;max-width:720px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(250px,1fr));gap:14px}
.card{display:block;background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:16px 18px;color:var(--fg);box-shadow:0 1px 2px rgba(20,30,60,.04)}
.card:hover{border-color:var(--accent);text-decoration:none;
box-shadow:0 2px 10px rgba(53,80,232,.12)}
.card .t{font-weight:700;font-size:16px;color:var(--ink)}
.card .u{display:block;color:var(--accent);margin:2px 0 6px}
.card .d{color:var(--muted);font-size:14px}
.card.primary{border-color:#c9d1ff;background:linear-gradient(180deg,#fff,#f5f7ff)}
pre.shell{background:var(--ink);color:#e6e9f5;border-radius:10px;padding:14px 18px;overflow-x:auto;
font-size:13px;line-height:1.6}
h2.sub{font-size:18px;margin:36px 0 10px}
"""


def page(title: str, body: str) -> str:
    """A whole HTML document around ``body`` (already HTML), with the stylesheet inline."""
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>\n")

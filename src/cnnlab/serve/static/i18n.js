// Every string the page shows, one table per language. The page's HTML names keys (data-i18n for text,
// data-i18n-label for aria-label, data-i18n-title for title); the scripts call t(key, {name: value}).
// Text that comes from the server (model labels, class names, part names such as "incep1.5x5") is shown as is.

export const STRINGS = {
  en: {
    "lang.name": "English",
    "lang.switch": "中文",
    "lang.switch.label": "切换到中文 (switch to Chinese)",
    "title": "cnnlab: see inside a CNN",
    "heading": "See inside a CNN",
    "tagline": "The networks of Liu Er’s PyTorch course, lecture 11, “卷积神经网络（高级篇）” (CNN, advanced): draw a digit and watch every block, branch and skip at work.",
    "tabs.label": "Sections",
    "tab.explore": "Explore",
    "tab.train": "Train",
    "model.label": "Model",
    "model.none": "no model served",
    "compare": "All models side by side",
    "pad.label": "Drawing pad: draw with a mouse, a finger or a pen",
    "pad.hint": "Draw here",
    "clear": "Clear",
    "upload": "Upload an image",
    "reset": "Turn all parts back on",
    "answer.none": "Draw a digit, or upload an image.",
    "answer.some": "Draw something, or upload an image.",
    "answer.live": "{model} says {answer} ({percent})",
    "sure": "{percent} sure",
    "off.count": "off: {names}",
    "probabilities": "Probabilities",
    "prob.delta": "change since all parts were on",
    "prob.item": "{name}: {percent}",
    "prob.item.moved": "{name}: {percent}, was {before}",
    "ms": "{ms} ms",
    "compare.title": "Every model on the same drawing",
    "inside.title": "Inside {model}",
    "inside.empty": "Draw a digit on the pad: each layer's feature maps appear here.",
    "inside.help": "Click a branch, a conv path or a skip to switch it off (Enter or Space with the keyboard); the prediction follows at once.",
    "seen": "The image the model saw",
    "seen.alt": "the {size} image the model saw",
    "kind.conv": "convolution",
    "kind.inception": "Inception block",
    "kind.residual": "residual block",
    "kind.linear": "linear layer",
    "kind.other": "layer",
    "maps.some": "{count} of {channels} feature maps",
    "maps.all": "{count} feature maps",
    "maps.alt": "feature maps of {name}",
    "logits": "scores (logits)",
    "branch": "branch {name}",
    "branch.share": "share {percent}",
    "branch.toggle": "Switch off branch {name} of {block}",
    "path.skip": "skip x",
    "path.conv": "conv path F(x)",
    "path.sum": "sum F(x) + x",
    "path.norm": "norm {norm}",
    "path.toggle.skip": "Switch off the skip of {block}",
    "path.toggle.conv": "Switch off the conv path of {block}",
    "part.off": "off",
    "part.on": "on",
    "error": "error: {message}",
    "working": "working…",
    "train.title": "Train a model",
    "train.none": "No model is served yet: train one here. It appears in the model list when it is done.",
    "train.disabled": "Training from the page is switched off on this server.",
    "train.model": "Model",
    "train.budget": "Time budget (seconds)",
    "train.start": "Start",
    "train.stop": "Stop (keep what is trained)",
    "train.progress": "Training progress",
    "train.chart": "Training curves: loss every few steps, validation and test accuracy per epoch",
    "train.points": "{steps} loss points, {epochs} epoch(s)",
    "train.state.idle": "Ready.",
    "train.state.starting": "Starting {model}…",
    "train.state.running": "Training {model}: {elapsed} s of {budget} s",
    "train.state.stopping": "Stopping after this step…",
    "train.epoch": "Epoch {epoch}: validation {val}, test {test}",
    "train.done": "Done: {model} reaches {acc} on the test set. It is selected in Explore.",
    "train.done.stopped": "Stopped: {model} kept what it learned ({acc} on the test set). It is selected in Explore.",
    "train.failed": "Training failed: {message}",
    "train.lost": "Lost the connection to the training.",
    "chart.loss": "training loss",
    "chart.val": "validation accuracy",
    "chart.test": "test accuracy",
    "chart.steps": "steps",
    "chart.empty": "The curves appear here while a model trains.",
    "model.failed": "Could not reach the server: {message}",
  },
  zh: {
    "lang.name": "中文",
    "lang.switch": "English",
    "lang.switch.label": "Switch to English (切换到英文)",
    "title": "cnnlab：看见卷积神经网络的内部",
    "heading": "看见卷积神经网络的内部",
    "tagline": "刘二大人《PyTorch 深度学习实践》第 11 讲“卷积神经网络（高级篇）”里的网络：写一个数字，看每个块、每条分支和跳跃连接在做什么。",
    "tabs.label": "页面分区",
    "tab.explore": "探索",
    "tab.train": "训练",
    "model.label": "模型",
    "model.none": "还没有可用的模型",
    "compare": "所有模型并排对比",
    "pad.label": "画板：用鼠标、手指或触控笔书写",
    "pad.hint": "在这里写",
    "clear": "清空",
    "upload": "上传图片",
    "reset": "恢复所有部分",
    "answer.none": "写一个数字，或者上传一张图片。",
    "answer.some": "画点什么，或者上传一张图片。",
    "answer.live": "{model} 认为是 {answer}（{percent}）",
    "sure": "置信度 {percent}",
    "off.count": "已关闭：{names}",
    "probabilities": "概率",
    "prob.delta": "与全部开启时相比的变化",
    "prob.item": "{name}：{percent}",
    "prob.item.moved": "{name}：{percent}，原来是 {before}",
    "ms": "{ms} 毫秒",
    "compare.title": "同一张图，每个模型的预测",
    "inside.title": "{model} 的内部",
    "inside.empty": "在画板上写一个数字，这里就会显示每一层的特征图。",
    "inside.help": "点击某条分支、卷积路径或跳跃连接即可把它关掉（键盘用回车或空格），预测会立刻更新。",
    "seen": "模型看到的图像",
    "seen.alt": "模型看到的 {size} 图像",
    "kind.conv": "卷积层",
    "kind.inception": "Inception 块",
    "kind.residual": "残差块",
    "kind.linear": "全连接层",
    "kind.other": "层",
    "maps.some": "{channels} 张特征图中的 {count} 张",
    "maps.all": "{count} 张特征图",
    "maps.alt": "{name} 的特征图",
    "logits": "得分（logits）",
    "branch": "分支 {name}",
    "branch.share": "占比 {percent}",
    "branch.toggle": "关闭 {block} 的 {name} 分支",
    "path.skip": "跳跃连接 x",
    "path.conv": "卷积路径 F(x)",
    "path.sum": "相加 F(x) + x",
    "path.norm": "范数 {norm}",
    "path.toggle.skip": "关闭 {block} 的跳跃连接",
    "path.toggle.conv": "关闭 {block} 的卷积路径",
    "part.off": "已关闭",
    "part.on": "开启",
    "error": "出错了：{message}",
    "working": "计算中…",
    "train.title": "训练一个模型",
    "train.none": "服务器上还没有模型：先在这里训练一个，训练完成后它会出现在模型列表里。",
    "train.disabled": "这个服务器关闭了网页训练功能。",
    "train.model": "模型",
    "train.budget": "训练时长（秒）",
    "train.start": "开始训练",
    "train.stop": "停止（保留已训练的结果）",
    "train.progress": "训练进度",
    "train.chart": "训练曲线：每隔几步的损失，每个 epoch 的验证集和测试集准确率",
    "train.points": "{steps} 个损失点，{epochs} 个 epoch",
    "train.state.idle": "准备就绪。",
    "train.state.starting": "正在启动 {model}…",
    "train.state.running": "正在训练 {model}：{elapsed} 秒 / {budget} 秒",
    "train.state.stopping": "这一步结束后停止…",
    "train.epoch": "第 {epoch} 个 epoch：验证集 {val}，测试集 {test}",
    "train.done": "训练完成：{model} 在测试集上的准确率为 {acc}，已在“探索”中选中。",
    "train.done.stopped": "已停止：{model} 保留了目前学到的结果（测试集准确率 {acc}），已在“探索”中选中。",
    "train.failed": "训练失败：{message}",
    "train.lost": "与训练的连接断开了。",
    "chart.loss": "训练损失",
    "chart.val": "验证集准确率",
    "chart.test": "测试集准确率",
    "chart.steps": "步数",
    "chart.empty": "训练时，曲线会实时显示在这里。",
    "model.failed": "连不上服务器：{message}",
  },
};

const STORE_KEY = "cnnlab.lang";
let language = pickLanguage();

// A stored choice wins; otherwise the first of the browser's languages that the page has (zh-CN, zh-TW, zh -> zh).
function pickLanguage() {
  let stored = null;
  try { stored = localStorage.getItem(STORE_KEY); } catch { /* storage off: follow the browser */ }
  if (stored && stored in STRINGS) return stored;
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const base = tag.toLowerCase().split("-")[0];
    if (base in STRINGS) return base;
  }
  return "en";
}

export function currentLanguage() {
  return language;
}

export function t(key, vars = {}) {
  const text = STRINGS[language][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

// Fill the static text of `root` from the table and set <html lang>.
export function applyLanguage(root = document) {
  document.documentElement.lang = language === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
}

export function setLanguage(next) {
  language = next in STRINGS ? next : "en";
  try { localStorage.setItem(STORE_KEY, language); } catch { /* not kept across visits, still switched */ }
  applyLanguage();
}

// The other language, for the switch: English <-> Chinese.
export function otherLanguage() {
  return language === "zh" ? "en" : "zh";
}

// Numbers as the page's language writes them.
export function percent(p, digits = 1) {
  return `${(100 * p).toFixed(digits)}%`;
}

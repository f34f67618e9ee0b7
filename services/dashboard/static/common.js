// What the dashboard (app.js) and the lab portal (portal.js) share. A plain script loaded before the
// page's own (index.html, portal.html): its declarations are globals of the page, as the page's are.
// - language: French by default, English on the switch, one choice for both pages (localStorage);
//   each page sets its own texts in i18n.messages, `t` looks a key up in them;
// - the header's tools (language switch, logout), the same on both pages;
// - a session: POST <base>/login with the token sets the page's HttpOnly cookie (which the page never
//   reads), POST <base>/logout drops it; a 401 from the API shows the login form again;
// - formatting (dates, counts), the JSON API call, table cells and SVG elements, the render count.
'use strict';

const $ = (selector) => document.querySelector(selector);
const SVG = 'http://www.w3.org/2000/svg';
const DAY_MS = 86400000;
const LANGUAGE_KEY = 'labflow.lang';

// --- language --------------------------------------------------------------------------------------
const i18n = { lang: savedLanguage(), messages: { fr: {}, en: {} } };

function savedLanguage() {
  try { return localStorage.getItem(LANGUAGE_KEY) === 'en' ? 'en' : 'fr'; } catch { return 'fr'; }
}

function t(key, params = {}) {
  const template = i18n.messages[i18n.lang][key] ?? i18n.messages.fr[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ''));
}

function applyLanguage() {
  document.documentElement.lang = i18n.lang;
  document.title = t('app.title');
  document.querySelectorAll('[data-i18n]').forEach((element) => { element.textContent = t(element.dataset.i18n); });
  document.querySelectorAll('#language button').forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.lang === i18n.lang)));
}

function chooseLanguage(lang) {
  i18n.lang = lang;
  try { localStorage.setItem(LANGUAGE_KEY, lang); } catch { /* private mode: not remembered */ }
  applyLanguage();
}

// --- formatting: French (dd/mm/yyyy, decimal comma) or English (ISO dates) --------------------------
const locale = () => (i18n.lang === 'fr' ? 'fr-FR' : 'en-GB');
const isoDay = (date) => date.toISOString().slice(0, 10);
const addDays = (day, n) => isoDay(new Date(Date.parse(day) + n * DAY_MS));
function fmtDay(day) {
  if (!day) return '–';
  if (i18n.lang !== 'fr') return day;
  const [y, m, d] = day.split('-');
  return `${d}/${m}/${y}`;
}
function count(value) {
  if (value === null || value === undefined) return '–';
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: 0 }).format(value);
}

// --- API -------------------------------------------------------------------------------------------
class Unauthenticated extends Error {}

async function api(path) {
  const response = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (response.status === 401) throw new Unauthenticated();
  const body = await response.json();
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join('; ') : body.detail;
    throw new Error(detail || response.statusText);
  }
  return body;
}

function cell(row, value, className) {
  const td = document.createElement('td');
  td.textContent = value;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function svg(name, attributes = {}, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

// --- rendering: the browser specs wait for body[data-state=ready] with a new data-version ------------
let renders = 0;
function rendered() {
  renders += 1;
  document.body.dataset.version = String(renders);
}

// --- the header's tools: language switch and logout (its text comes from the page's messages) -------
$('header .header-tools').innerHTML = `
  <div id="language" class="language" role="group" aria-label="Langue / Language">
    <button type="button" data-lang="fr" lang="fr">FR</button><button type="button" data-lang="en" lang="en">EN</button>
  </div>
  <button id="logout" type="button" hidden data-i18n="logout"></button>`;

// --- session ---------------------------------------------------------------------------------------
// `base`: where login and logout are ('' for the dashboard, '/portal'); `content`: the page's main
// element, shown once logged in; `start`: loads the page once logged in; `loggedOut`: what else the
// page forgets when the login form shows.
function sessionControls(base, content, start, loggedOut = () => {}) {
  function showLogin(message) {
    loggedOut();
    $(content).hidden = true;
    $('#logout').hidden = true;
    $('#login').hidden = false;
    $('#login-error').textContent = message || '';
    $('#token').focus();
  }

  // the page's first API call: its answer, or null when not logged in (the login form shows)
  async function begin(path) {
    try {
      return await api(path);
    } catch (error) {
      if (!(error instanceof Unauthenticated)) throw error;
      showLogin();
      return null;
    }
  }

  function showContent() {
    $('#login').hidden = true;
    $(content).hidden = false;
    $('#logout').hidden = false;
  }

  $('#login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const response = await fetch(`${base}/login`, {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: $('#token').value }),
    });
    if (!response.ok) {
      showLogin(t('login.refused'));
      return;
    }
    $('#token').value = '';
    await start();
  });
  $('#logout').addEventListener('click', async () => {
    await fetch(`${base}/logout`, { method: 'POST', credentials: 'same-origin' });
    showLogin();
  });
  return { showLogin, begin, showContent };
}

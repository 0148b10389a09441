/** Entry point: takes a token handed over in the URL fragment, then renders the app. */
import { render } from "preact";
import { App } from "./app";
import { takeTokenFromFragment } from "./auth";
import "./styles.css";

takeTokenFromFragment();
const root = document.getElementById("app");
if (root !== null) render(<App />, root);

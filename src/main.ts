import 'reflect-metadata';
import { runTailfleet } from './run';

/** Entry point of `npm start` (compiled: `node dist/src/main.js`); see src/run.ts. */
void runTailfleet();
